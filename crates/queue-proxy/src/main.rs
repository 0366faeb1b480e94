use std::process::ExitCode;

fn main() -> ExitCode {
    queue_platform::bootstrap::service_main(
        queue_proxy::NAME,
        "Queue proxy: sends each legacy path to Raptor or to Queue according to the migration phase.",
        |config| queue_proxy::run(config, queue_platform::Signals::Handle),
    )
}
