//! Domain types shared by every layer: ids, states, the run record, secrets and the pure lifecycle.

pub mod channels;
pub mod ids;
pub mod pool;
pub mod run;
pub mod secrets;
pub mod state;
