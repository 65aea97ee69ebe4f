//! Rewriting an XML answer while it streams, one child of its root at a
//! time.
//!
//! dav-server writes a PROPFIND answer as a stream, one `<D:response>` per
//! entry. griddav corrects each response (404 propstats, the `D:` prefix,
//! quoted entity tags: [`super::propstat`]) and takes a user's root out of
//! its hrefs ([`crate::http::roots`]). Both need only one response at a
//! time, so the answer is cut into the root's children as it arrives: a
//! Depth: 1 listing of 100,000 entries costs the memory of one entry, and
//! its first bytes leave before the last entry is read.
//!
//! The cutting follows XML's tokens (start and end tags with quoted
//! attribute values, comments, CDATA, processing instructions), not a
//! search for `</D:response>`, so a dead property whose value contains
//! such text cannot move a boundary. Anything before the root's start tag,
//! the text between children and everything after the root's end passes
//! as it came. A child larger than [`MAX_PIECE`] (or a document that is
//! not one root with children) makes the rest of the answer pass unchanged.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// The largest child of the root held to be rewritten; past this the
/// answer goes on unchanged. dav-server's largest responses are an entry
/// with many dead properties (each value at most 64 KiB in griddav).
pub const MAX_PIECE: usize = 16 << 20;

/// Rewrites one child of the root. `root_open` is the root's start tag as
/// written (`<D:multistatus xmlns:D="DAV:" ...>`), for the namespace
/// declarations the child relies on; `child` is the child's complete
/// text. Returns the replacement, or `None` to keep the child as it is.
pub trait Rewrite: Send {
    /// The replacement for `child`, or `None` to keep it.
    fn child(&mut self, root_open: &[u8], child: &[u8]) -> Option<Vec<u8>>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before the root's start tag.
    Prolog,
    /// Inside the root: `depth` is 1 between children.
    Inside,
    /// After the root's end, or given up: everything passes unchanged.
    Verbatim,
}

/// The cutting state of one answer.
pub struct Splitter<R> {
    rewrite: R,
    buf: Vec<u8>,
    /// Where scanning resumes: the start of a token not yet complete, or
    /// the end of the text scanned so far.
    pos: usize,
    /// Bytes of `buf` before this are passed on already.
    emitted: usize,
    state: State,
    depth: usize,
    /// Where the child being read starts, at depth >= 2.
    child_start: usize,
    root_open: Vec<u8>,
}

/// What one token is.
enum Token {
    Start { self_closing: bool },
    End,
    Other,
}

impl<R: Rewrite> Splitter<R> {
    /// A splitter that hands each child of the root to `rewrite`.
    pub fn new(rewrite: R) -> Splitter<R> {
        Splitter {
            rewrite,
            buf: Vec::new(),
            pos: 0,
            emitted: 0,
            state: State::Prolog,
            depth: 0,
            child_start: 0,
            root_open: Vec::new(),
        }
    }

    /// Takes the next bytes of the answer; returns what can be sent now.
    pub fn push(&mut self, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        if self.state == State::Verbatim {
            out.extend_from_slice(data);
            return out;
        }
        self.buf.extend_from_slice(data);
        self.scan(&mut out);
        // Keep only what is not passed on yet.
        self.buf.drain(..self.emitted);
        self.pos -= self.emitted;
        self.child_start = self.child_start.saturating_sub(self.emitted);
        self.emitted = 0;
        if self.buf.len() > MAX_PIECE {
            tracing::warn!(
                held = self.buf.len(),
                "an XML answer's part is too large to rewrite; the rest goes out unchanged"
            );
            self.give_up(&mut out);
        }
        out
    }

    /// The end of the answer: whatever is held goes out as it is.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.give_up(&mut out);
        out
    }

    fn give_up(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.buf[self.emitted..]);
        self.buf.clear();
        self.pos = 0;
        self.emitted = 0;
        self.state = State::Verbatim;
    }

    fn scan(&mut self, out: &mut Vec<u8>) {
        while self.state != State::Verbatim {
            let Some(lt) = memchr(b'<', &self.buf[self.pos..]).map(|i| self.pos + i) else {
                self.pos = self.buf.len();
                if self.state == State::Inside && self.depth == 1 {
                    // Text between children: on its way.
                    out.extend_from_slice(&self.buf[self.emitted..]);
                    self.emitted = self.buf.len();
                }
                return;
            };
            self.pos = lt;
            let Some((token, end)) = token_at(&self.buf, lt) else {
                // Incomplete: wait for more bytes.
                if self.state == State::Inside && self.depth == 1 {
                    out.extend_from_slice(&self.buf[self.emitted..lt]);
                    self.emitted = lt;
                }
                return;
            };
            self.pos = end;
            match (self.state, token) {
                (
                    State::Prolog,
                    Token::Start {
                        self_closing: false,
                    },
                ) => {
                    self.root_open = self.buf[lt..end].to_vec();
                    self.state = State::Inside;
                    self.depth = 1;
                    out.extend_from_slice(&self.buf[self.emitted..end]);
                    self.emitted = end;
                }
                (State::Prolog, Token::Start { self_closing: true })
                | (State::Prolog, Token::End) => {
                    self.give_up(out);
                }
                (State::Prolog, Token::Other) => {}
                (State::Inside, Token::Start { self_closing }) => {
                    if self.depth == 1 {
                        out.extend_from_slice(&self.buf[self.emitted..lt]);
                        self.emitted = lt;
                        self.child_start = lt;
                        if self_closing {
                            self.child_done(end, out);
                        } else {
                            self.depth = 2;
                        }
                    } else if !self_closing {
                        self.depth += 1;
                    }
                }
                (State::Inside, Token::End) => {
                    self.depth -= 1;
                    if self.depth == 1 {
                        self.child_done(end, out);
                    } else if self.depth == 0 {
                        // The root's end: the rest passes as it is.
                        self.give_up(out);
                    }
                }
                (State::Inside, Token::Other) => {
                    if self.depth == 1 {
                        out.extend_from_slice(&self.buf[self.emitted..end]);
                        self.emitted = end;
                    }
                }
                (State::Verbatim, _) => {}
            }
        }
    }

    fn child_done(&mut self, end: usize, out: &mut Vec<u8>) {
        let child = &self.buf[self.child_start..end];
        match self.rewrite.child(&self.root_open, child) {
            Some(new) => out.extend_from_slice(&new),
            None => out.extend_from_slice(child),
        }
        self.emitted = end;
    }
}

fn memchr(byte: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == byte)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The token starting with the `<` at `at`, and the index just past it;
/// `None` while it is not complete.
fn token_at(buf: &[u8], at: usize) -> Option<(Token, usize)> {
    let rest = &buf[at..];
    let after = |needle: &[u8], from: usize| {
        find(&rest[from..], needle).map(|i| at + from + i + needle.len())
    };
    if rest.len() < 2 {
        return None;
    }
    match rest[1] {
        b'?' => after(b"?>", 2).map(|end| (Token::Other, end)),
        b'!' => {
            if rest.len() < 4 {
                return None;
            }
            if rest.starts_with(b"<!--") {
                after(b"-->", 4).map(|end| (Token::Other, end))
            } else if rest.len() < 9 && b"<![CDATA[".starts_with(rest) {
                None
            } else if rest.starts_with(b"<![CDATA[") {
                after(b"]]>", 9).map(|end| (Token::Other, end))
            } else {
                after(b">", 2).map(|end| (Token::Other, end))
            }
        }
        b'/' => after(b">", 2).map(|end| (Token::End, end)),
        _ => {
            // A start tag: `>` outside quoted attribute values ends it.
            let mut quote = None;
            for (i, &b) in rest.iter().enumerate().skip(1) {
                match quote {
                    Some(q) if b == q => quote = None,
                    Some(_) => {}
                    None if b == b'"' || b == b'\'' => quote = Some(b),
                    None if b == b'>' => {
                        let self_closing = rest[i - 1] == b'/';
                        return Some((Token::Start { self_closing }, at + i + 1));
                    }
                    None => {}
                }
            }
            None
        }
    }
}

/// A response body rewritten by a [`Splitter`] as it streams.
pub struct Rewritten<B, R> {
    inner: B,
    splitter: Splitter<R>,
    done: bool,
}

impl<B, R: Rewrite> Rewritten<B, R> {
    /// `inner` with each child of the root passed through `rewrite`.
    pub fn new(inner: B, rewrite: R) -> Rewritten<B, R> {
        Rewritten {
            inner,
            splitter: Splitter::new(rewrite),
            done: false,
        }
    }
}

impl<B, R> Body for Rewritten<B, R>
where
    B: Body<Data = Bytes, Error = io::Error> + Unpin,
    R: Rewrite + Unpin,
{
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        // Trailers: dav-server sends none.
                        continue;
                    };
                    let out = this.splitter.push(&data);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    this.done = true;
                    let out = this.splitter.finish();
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    /// Wraps every child in `[` `]` and records the root's start tag.
    struct Mark(Vec<Vec<u8>>);
    impl Rewrite for Mark {
        fn child(&mut self, root_open: &[u8], child: &[u8]) -> Option<Vec<u8>> {
            self.0.push(root_open.to_vec());
            let mut v = b"[".to_vec();
            v.extend_from_slice(child);
            v.push(b']');
            Some(v)
        }
    }

    fn run(doc: &[u8], step: usize) -> (String, usize) {
        let mut s = Splitter::new(Mark(Vec::new()));
        let mut out = Vec::new();
        for piece in doc.chunks(step) {
            out.extend(s.push(piece));
        }
        out.extend(s.finish());
        let n = s.rewrite.0.len();
        assert!(s.rewrite.0.iter().all(|r| r == b"<D:m xmlns:D=\"DAV:\">"));
        (String::from_utf8(out).unwrap(), n)
    }

    #[test]
    fn cuts_at_the_root_children_whatever_the_chunks() {
        let doc = b"<?xml version=\"1.0\"?>\n<D:m xmlns:D=\"DAV:\"><D:r><D:h>/a</D:h><x v=\"a>b\"/></D:r>\n\
            <D:r><!-- </D:r> --><![CDATA[</D:r><]]><D:r>x</D:r></D:r><e/></D:m>\n";
        let want = "<?xml version=\"1.0\"?>\n<D:m xmlns:D=\"DAV:\">[<D:r><D:h>/a</D:h><x v=\"a>b\"/></D:r>]\n\
            [<D:r><!-- </D:r> --><![CDATA[</D:r><]]><D:r>x</D:r></D:r>][<e/>]</D:m>\n";
        for step in [1, 2, 3, 7, 64, doc.len()] {
            let (out, n) = run(doc, step);
            assert_eq!(out, want, "chunks of {step}");
            assert_eq!(n, 3);
        }
    }

    #[test]
    fn not_a_document_with_children_passes_unchanged() {
        for doc in [&b"<a/>"[..], b"plain text", b"<a><b>cut off", b""] {
            let (out, _) = run(doc, 3);
            assert_eq!(out.as_bytes(), doc);
        }
    }
}
