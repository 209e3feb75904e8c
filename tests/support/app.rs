//! The application in process: built from test settings on a fresh database and data dir,
//! served on a loopback port of its own, with a client for it. The quickest way to the real
//! HTTP API; tests that kill or restart the gateway use [`super::gateway`] instead.

use super::client::{Api, Tokens};
use super::database::TestDatabase;
use super::gateway::cattery_bin;
use super::{ADMIN_TOKEN, DISPATCHER_TOKEN, MASTER_KEY, READER_TOKEN};
use cattery::app::{Application, Secrets};
use cattery::config::Settings;

/// Test settings: port 0, a data dir, the database, fast defaults, the local pool off unless asked.
pub fn test_settings(db: &TestDatabase, data_dir: &std::path::Path) -> Settings {
    let mut settings = Settings::default();
    settings.server.bind = "127.0.0.1:0".to_owned();
    settings.data_dir = data_dir.to_owned();
    settings.database.url = db.url().to_owned();
    settings.database.pool_size = 4;
    settings.local_pool.enabled = false;
    // The schedulers of these tests listen on plain http on loopback, which the default egress
    // policy refuses: allow exactly that.
    settings.egress.allow_http = true;
    settings.egress.allow_hosts = vec!["127.0.0.1".to_owned()];
    settings.local_pool.command =
        vec![cattery_bin().display().to_string(), "sample-job".to_owned()];
    settings.logging.level = "warn".to_owned();
    settings.defaults.polling.interval_ms = 50;
    settings.defaults.polling.max_interval_ms = 200;
    settings.defaults.retry.initial_backoff_ms = 20;
    settings.defaults.retry.max_backoff_ms = 200;
    settings.api.tokens = vec![
        token_entry("reader", READER_TOKEN, "reader"),
        token_entry("dispatcher", DISPATCHER_TOKEN, "dispatcher"),
    ];
    settings
}

fn token_entry(name: &str, token: &str, role: &str) -> cattery::config::ApiToken {
    cattery::config::ApiToken {
        name: name.to_owned(),
        sha256: cattery::crypto::sha256_hex(token.as_bytes()),
        role: role.to_owned(),
    }
}

/// A running application, its database and data dir, and a client for it (every call of
/// [`Api`] is a call of the app).
pub struct TestApp {
    pub api: Api,
    pub db: TestDatabase,
    /// The data dir, which lives as long as the app.
    pub data_dir: tempfile::TempDir,
}

impl std::ops::Deref for TestApp {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_prepared(adjust, |_| {}).await
}

/// The one way every test starts the application in process: [`test_settings`] on a fresh
/// database and data dir, adjusted by `adjust`, then `prepare` with the built application in
/// hand (to pin a name in its egress policy, for instance), then served on loopback.
pub async fn spawn_app_prepared(
    adjust: impl FnOnce(&mut Settings),
    prepare: impl FnOnce(&Application),
) -> TestApp {
    if std::env::var("TEST_LOG").is_ok() {
        cattery::telemetry::init(&cattery::config::LoggingSettings {
            format: "pretty".into(),
            level: "debug".into(),
        });
    }
    let db = TestDatabase::create().await;
    let data_dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(&db, data_dir.path());
    adjust(&mut settings);
    let secrets = Secrets {
        master_key: Some(MASTER_KEY.to_owned()),
        admin_token: Some(ADMIN_TOKEN.to_owned()),
    };
    let app = Application::build(settings, secrets)
        .await
        .expect("the application starts");
    prepare(&app);
    let address = format!("http://127.0.0.1:{}", app.port());
    actix_web::rt::spawn(app.run_until_stopped());
    TestApp {
        api: Api::new(address, Tokens::ROLES),
        db,
        data_dir,
    }
}
