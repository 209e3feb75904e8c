//! Request templates and answer mappings: the only home of handlebars and JMESPath.
//!
//! `engine` holds one handlebars registry per escaping position, `check` walks each
//! template's AST at registration, `request` renders a whole request and confines it to the
//! base URL, `body` renders `body` trees, and `mapping` evaluates JMESPath over answers.
//! The manifest module reads the document and drives these; nothing here reads raw manifests.

pub(crate) mod body;
pub(crate) mod check;
pub(crate) mod context;
pub(crate) mod engine;
pub(crate) mod escape;
pub(crate) mod helpers;
pub(crate) mod mapping;
pub(crate) mod request;

pub(crate) use check::{Scope, Stage};
pub(crate) use engine::Engine;
pub(crate) use mapping::{Captures, Expr, StateMapping};
pub(crate) use request::{BodySource, RequestSource, RequestTemplate};
