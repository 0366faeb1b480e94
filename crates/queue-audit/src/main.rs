use std::process::ExitCode;

fn main() -> ExitCode {
    queue_platform::bootstrap::service_main(
        queue_audit::NAME,
        "Queue audit service: the tamper-evident audit log: per-tenant HMAC chains, KMS keys, checkpoints, verification and reads.",
        |config| queue_audit::run(config, queue_platform::Signals::Handle),
    )
}
