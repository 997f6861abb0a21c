//! The field formatter of the human log format: tracing's default layout (`message` first,
//! then `name=value`) with every value passed through [`Escaped`], so an event id, type,
//! correlation id or handler error holding control characters is logged as visible escapes
//! (see [`super::terminal`]). The JSON log format keeps the exact text.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};

use super::terminal::Escaped;

/// `fmt_fields` of the human log format: the default fields with escaped values.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct EscapedFields;

impl<'a> MakeVisitor<Writer<'a>> for EscapedFields {
    type Visitor = EscapingVisitor<'a>;

    fn make_visitor(&self, target: Writer<'a>) -> Self::Visitor {
        EscapingVisitor(DefaultVisitor::new(target, true))
    }
}

/// tracing's [`DefaultVisitor`], every value escaped before it writes it.
pub(crate) struct EscapingVisitor<'a>(DefaultVisitor<'a>);

impl Visit for EscapingVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        // As the default: the message as text, other strings quoted.
        if field.name() == "message" {
            self.0
                .record_debug(field, &Escaped(format_args!("{value}")));
        } else {
            self.0.record_debug(field, &Escaped(value));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .record_debug(field, &Escaped(format_args!("{}", ErrorChain(value))));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.record_debug(field, &Escaped(value));
    }
}

impl VisitOutput<fmt::Result> for EscapingVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.0.finish()
    }
}

impl VisitFmt for EscapingVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        self.0.writer()
    }
}

/// An error and its sources, `: `-separated.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// The human-format lines `f` logs at info and above, without ANSI colours.
    fn logged(f: impl FnOnce()) -> String {
        let buf = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = Arc::clone(&buf);
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .fmt_fields(EscapedFields)
            .with_writer(move || Writer(Arc::clone(&sink)))
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buf.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    struct Writer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Writer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[derive(Debug)]
    struct Outer(Inner);
    #[derive(Debug)]
    struct Inner;
    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer\x1b[1m")
        }
    }
    impl fmt::Display for Inner {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("inner\r")
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    impl std::error::Error for Inner {}

    #[test]
    fn every_value_is_escaped_and_the_layout_kept() {
        let id = "evil\x1b[2J\x1b]0;pwned\x07\r\x08\u{202e}";
        let out = logged(|| {
            tracing::warn!(id = %id, r#type = "a.b", attempt = 3, ok = true, quoted = id, error = %"http status 400: \x1b[31mred\nfake line", "handler failed {}", "\u{9b}2J");
            let e = Outer(Inner);
            tracing::info!(error = &e as &dyn std::error::Error, "chained");
        });
        assert_eq!(
            out,
            " WARN event_worker::cli::log_fields::tests: handler failed \\u{9b}2J \
             id=evil\\x1b[2J\\x1b]0;pwned\\x07\\r\\x08\\u{202e} type=\"a.b\" attempt=3 ok=true \
             quoted=\"evil\\u{1b}[2J\\u{1b}]0;pwned\\u{7}\\r\\u{8}\\u{202e}\" \
             error=http status 400: \\x1b[31mred\\nfake line\n \
             INFO event_worker::cli::log_fields::tests: chained error=outer\\x1b[1m: inner\\r\n"
        );
    }

    #[test]
    fn span_fields_are_escaped() {
        let out = logged(|| {
            let span = tracing::info_span!("event", id = %"s\x1b[Hx");
            let _g = span.enter();
            tracing::info!("inside");
        });
        assert!(out.contains("event{id=s\\x1b[Hx}"), "{out}");
        assert!(
            !out.chars()
                .any(|c| c != '\n' && super::super::terminal::is_escaped(c)),
            "{out:?}"
        );
    }
}
