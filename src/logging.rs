//! Logging, the same in every program (servers, CLIs, the agent): stderr, `HYDRA_LOG`
//! for the filter, `HYDRA_LOG_FORMAT` for text or JSON lines.

/// Logs to stderr, filtered by `HYDRA_LOG` (default `info`): the same in every program.
/// `HYDRA_LOG_FORMAT=json` writes one JSON object per line (`timestamp`, `level`,
/// `target`, the event's fields with `message`, and `span` with the fields of the span
/// it happened in, e.g. a request's `request_id`); `text` (the default) writes plain
/// lines, with colour codes only on a terminal, never into files and journals. Any
/// other format is refused before the program does anything (exit 2).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HYDRA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logger = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match std::env::var("HYDRA_LOG_FORMAT").as_deref() {
        Ok("json") => logger.json().flatten_event(true).with_current_span(true).with_span_list(false).init(),
        Ok("text") | Ok("") | Err(std::env::VarError::NotPresent) => {
            logger.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init()
        }
        Ok(other) => refuse(&format!("HYDRA_LOG_FORMAT must be `text` or `json`, not `{other}`")),
        Err(std::env::VarError::NotUnicode(_)) => refuse("HYDRA_LOG_FORMAT must be `text` or `json`"),
    }
}

fn refuse(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(2)
}
