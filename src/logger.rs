//! The VMM's logger: quiet by default (warnings and errors on stderr), redirectable to a file at
//! run time by `PUT /logger` / the config file's `logger` — which env_logger cannot do. The log
//! file is opened by wisp-hostfs: a regular file (created 0600), no symbolic link on the way.

use std::io::Write;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};
use wisp_api::Logger as LoggerConfig;

struct Sink {
    out: Box<dyn Write + Send>,
    show_level: bool,
    show_origin: bool,
    /// Only records whose target (module path) starts with this are written (`module`).
    module: Option<String>,
}

/// The microVM's id (`--id`), written on every line once set.
static INSTANCE_ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Names every following log line with the microVM's id (`--id`); set once, at start.
#[allow(dead_code)] // wispd shares this module and has no microVM id or --level.
pub fn set_instance_id(id: &str) {
    let _ = INSTANCE_ID.set(id.to_string());
}

struct VmmLogger {
    sink: Mutex<Sink>,
}

impl log::Log for VmmLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let Ok(mut sink) = self.sink.lock() else {
            return;
        };
        if let Some(module) = &sink.module {
            if !record.target().starts_with(module.as_str()) {
                return;
            }
        }
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0);
        let mut line = format!("[{ts} wisp:{}", std::process::id());
        if let Some(id) = INSTANCE_ID.get() {
            line.push_str(&format!(" id={id}"));
        }
        if sink.show_level {
            line.push_str(&format!(" {}", record.level()));
        }
        if sink.show_origin {
            line.push_str(&format!(
                " {}:{}",
                record.file().unwrap_or("?"),
                record.line().unwrap_or(0)
            ));
        }
        line.push_str(&format!("] {}\n", record.args()));
        let _ = sink.out.write_all(line.as_bytes());
    }

    fn flush(&self) {
        if let Ok(mut sink) = self.sink.lock() {
            let _ = sink.out.flush();
        }
    }
}

static LOGGER: std::sync::OnceLock<VmmLogger> = std::sync::OnceLock::new();

/// Installs the logger on stderr at `level` (a `log` level name; unknown names mean warn).
pub fn init(level: &str) {
    let logger = LOGGER.get_or_init(|| VmmLogger {
        sink: Mutex::new(Sink {
            out: Box::new(std::io::stderr()),
            show_level: true,
            show_origin: false,
            module: None,
        }),
    });
    let _ = log::set_logger(logger);
    log::set_max_level(level.parse().unwrap_or(log::LevelFilter::Warn));
}

/// Sends the log to `config.log_path` (appending) at `config.level`.
#[allow(dead_code)] // wispd shares this module and always logs to stderr.
pub fn configure(config: &LoggerConfig) -> Result<(), wisp_hostfs::HostFsError> {
    if config.log_path.as_os_str().is_empty() {
        configure_stderr(config.level, config.module.clone(), config.show_log_origin);
        return Ok(());
    }
    let file = wisp_hostfs::open_append_create(&config.log_path)?;
    if let Some(logger) = LOGGER.get() {
        if let Ok(mut sink) = logger.sink.lock() {
            *sink = Sink {
                out: Box::new(file),
                show_level: config.show_level,
                show_origin: config.show_log_origin,
                module: config.module.clone(),
            };
        }
    }
    log::set_max_level(config.level.level_filter());
    Ok(())
}

/// Firecracker's `--level` names (case-insensitive; `Warn` too).
#[allow(dead_code)] // wispd shares this module and has no microVM id or --level.
pub fn parse_level(name: &str) -> Option<wisp_api::LogLevel> {
    use wisp_api::LogLevel as L;
    Some(match name.to_ascii_lowercase().as_str() {
        "off" => L::Off,
        "error" => L::Error,
        "warning" | "warn" => L::Warning,
        "info" => L::Info,
        "debug" => L::Debug,
        "trace" => L::Trace,
        _ => return None,
    })
}

/// `--level`/`--module`/`--show-*` without `--log-path`: the stderr log changes its level
/// and filter only.
#[allow(dead_code)] // wispd shares this module and has no microVM id or --level.
pub fn configure_stderr(level: wisp_api::LogLevel, module: Option<String>, show_origin: bool) {
    if let Some(logger) = LOGGER.get() {
        if let Ok(mut sink) = logger.sink.lock() {
            sink.module = module;
            sink.show_origin = show_origin;
        }
    }
    log::set_max_level(level.level_filter());
}
