//! Progress and diagnostics on stderr through tracing, filtered by RUST_LOG, every line
//! passed through the secret redactor. `--log-format json` writes one object per line with
//! `severity` and `message`, which Cloud Logging keeps as structured entries when the build
//! sets `options.enableStructuredLogging: true`.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::report::Format;
use crate::secrets::RedactingStderr;

pub fn init(format: Format) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("tomoda_promote=info,warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| RedactingStderr)
        .with_target(false)
        .without_time()
        .with_ansi(false);
    let _ = match format {
        Format::Text => builder.try_init(),
        Format::Json => builder.event_format(CloudLogging).try_init(),
    };
}

/// Cloud Logging's severity names.
pub fn severity(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        _ => "DEBUG",
    }
}

struct CloudLogging;

impl<S, N> FormatEvent<S, N> for CloudLogging
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut object = Map::new();
        object.insert("severity".into(), severity(event.metadata().level()).into());
        object.insert("message".into(), fields.message.unwrap_or_default().into());
        object.extend(fields.rest);
        writeln!(writer, "{}", Value::Object(object))
    }
}

#[derive(Default)]
struct Fields {
    message: Option<String>,
    rest: Map<String, Value>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_value(field, format!("{value:?}").into());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_value(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record_value(field, value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record_value(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.record_value(field, value.into());
    }
}

impl Fields {
    fn record_value(&mut self, field: &Field, value: Value) {
        match field.name() {
            "message" => {
                self.message = Some(
                    value
                        .as_str()
                        .map_or_else(|| value.to_string(), str::to_string),
                );
            }
            name => {
                self.rest.insert(name.to_string(), value);
            }
        }
    }
}
