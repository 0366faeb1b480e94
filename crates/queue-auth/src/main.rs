use std::process::ExitCode;

fn main() -> ExitCode {
    queue_platform::bootstrap::service_main(
        queue_auth::NAME,
        "Queue auth service: users, passkeys, sessions v2, backup codes and email verification.",
        |config: queue_auth::AuthConfig| queue_auth::run(config, queue_platform::Signals::Handle),
    )
}
