use std::process::ExitCode;

fn main() -> ExitCode {
    queue_platform::bootstrap::service_main(
        queue_rbac::NAME,
        "Queue rbac service: roles, permissions, grants at global, tenant and ticket scope, checks and grant history.",
        |config: queue_rbac::RbacConfig| queue_rbac::run(config, queue_platform::Signals::Handle),
    )
}
