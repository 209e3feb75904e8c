//! The `cattery` binary: parses the command line and runs the command.

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    cattery::cli::main().await
}
