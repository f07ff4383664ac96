//! Routes `tracing` events a plugin emits during an attempt into that attempt's log, so a
//! plugin's own diagnostics sit beside its output in the console.
//!
//! The worker opens a span per attempt and registers the attempt's log sink under the span's id;
//! [`TaskLogLayer`] finds, for each event, the nearest enclosing attempt span and writes the event
//! there. Events outside any attempt are left to the process's other layers.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, LazyLock, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::Id;
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::plugin::{LogSink, LogStream};

static SINKS: LazyLock<Mutex<HashMap<u64, Arc<dyn LogSink>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn sinks() -> std::sync::MutexGuard<'static, HashMap<u64, Arc<dyn LogSink>>> {
    SINKS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sends events inside `span` to `sink` until the span closes. A no-op when no subscriber with
/// [`TaskLogLayer`] is installed (the span then has no id).
pub(crate) fn attach(span: &tracing::Span, sink: Arc<dyn LogSink>) {
    if let Some(id) = span.id() {
        sinks().insert(id.into_u64(), sink);
    }
}

/// The `tracing_subscriber` layer that writes plugin events into task logs; install it in the
/// worker process's subscriber.
#[derive(Debug, Default, Clone, Copy)]
pub struct TaskLogLayer;

impl<S> Layer<S> for TaskLogLayer
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        let sink = {
            let sinks = sinks();
            if sinks.is_empty() {
                return;
            }
            scope
                .into_iter()
                .find_map(|span| sinks.get(&span.id().into_u64()).cloned())
        };
        let Some(sink) = sink else { return };
        let mut line = EventLine::default();
        event.record(&mut line);
        let metadata = event.metadata();
        sink.line(
            LogStream::Event,
            &format!(
                "{} {}: {}{}",
                metadata.level(),
                metadata.target(),
                line.message,
                line.fields
            ),
        );
    }

    fn on_close(&self, id: Id, _ctx: Context<'_, S>) {
        sinks().remove(&id.into_u64());
    }
}

/// An event's message and its other fields as `key=value`.
#[derive(Default)]
struct EventLine {
    message: String,
    fields: String,
}

impl Visit for EventLine {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}
