use std::process::ExitCode;

fn main() -> ExitCode {
    queue_platform::bootstrap::service_main(
        queue_audit::NAME,
        "Queue audit service: the tamper-evident log (HMAC chains per tenant, KMS keys, signed checkpoints).",
        |config| queue_audit::run(config, queue_platform::Signals::Handle),
    )
}
