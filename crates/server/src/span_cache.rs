//! The bytes of recently decoded groups of pictures, per video. A later frame
//! of the same GOP reuses them, or extends them with one more range read of
//! just the missing tail; nothing already held is fetched again.

use media::Span;
use std::collections::VecDeque;
use std::ops::Range;

/// Recently fetched spans, bounded in bytes.
pub struct SpanCache {
    spans: VecDeque<Span>,
    limit_bytes: usize,
}

impl SpanCache {
    pub fn new(limit_bytes: usize) -> Self {
        Self { spans: VecDeque::new(), limit_bytes }
    }

    /// The span that covers `needed` and reaches furthest past it, else the
    /// one that starts at or before it and can be extended to cover it.
    pub fn find(&self, needed: &Range<u64>) -> Option<Span> {
        let reach = |span: &&Span| span.range().end;
        let covering = self.spans.iter().filter(|span| span.covers(needed)).max_by_key(reach);
        let extendable = || {
            self.spans
                .iter()
                .filter(|span| {
                    let range = span.range();
                    range.start <= needed.start && needed.start < range.end && range.end < needed.end
                })
                .max_by_key(reach)
        };
        covering.or_else(extendable).cloned()
    }

    /// Drops every span (the memory budget needs the room).
    pub fn clear(&mut self) {
        self.spans.clear();
    }

    pub fn insert(&mut self, span: Span) {
        let range = span.range();
        self.spans.retain(|old| !(old.range().start >= range.start && old.range().end <= range.end));
        self.spans.push_back(span);
        while self.spans.len() > 1 && self.spans.iter().map(Span::len).sum::<usize>() > self.limit_bytes {
            self.spans.pop_front();
        }
    }
}
