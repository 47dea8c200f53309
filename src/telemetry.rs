//! Logging: a tracing subscriber configured from `[log]`, overridable with `RUST_LOG`.

use tracing_subscriber::{EnvFilter, fmt};

use crate::config::{LogConfig, LogFormat};

pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        let configured = EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info"));
        // ruma's state-res narrates every auth check at info level.
        match "ruma_state_res=warn".parse() {
            Ok(directive) => configured.add_directive(directive),
            Err(_) => configured,
        }
    });
    let builder = fmt().with_env_filter(filter).with_target(false);
    // A second init (tests that start several servers) keeps the first subscriber.
    let _ = match config.format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
