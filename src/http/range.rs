//! Range requests dav-server must not answer itself.
//!
//! dav-server 0.11 answers a Range header with several ranges as
//! `multipart/byteranges`, one part per range, in the order asked:
//! `bytes=0-,0-,...` a thousand times makes a 3 KB request return a
//! thousand copies of the file. Its parts are also malformed (bare LF
//! line ends where RFC 9110 section 14.6 and RFC 2046 need CRLF, and the
//! fixed boundary `BOUNDARY`, which the content may contain), so no
//! multi-range answer of it can be trusted. RFC 9110 section 14.2 lets a
//! server ignore Range: a request for more than one range gets the whole
//! file, 200, never more bytes than the file has. A single range is left
//! to the handler (206, or 416 when unsatisfiable).

use ::http::header::RANGE;
use ::http::Request;

/// `request` with its Range header removed when it asks for more than one
/// range (in one header or several).
pub fn single_range_only<B>(mut request: Request<B>) -> Request<B> {
    let headers = request.headers();
    let values = headers.get_all(RANGE).iter().count();
    if values == 0 {
        return request;
    }
    let ranges: usize = headers
        .get_all(RANGE)
        .iter()
        .map(|value| count_ranges(value.as_bytes()))
        .sum();
    if values > 1 || ranges > 1 {
        tracing::debug!(ranges, "multi-range request answered with the whole file");
        request.headers_mut().remove(RANGE);
    }
    request
}

/// The ranges one Range value names: its non-empty comma-separated
/// elements (RFC 9110 section 5.6.1 allows empty ones).
fn count_ranges(value: &[u8]) -> usize {
    value
        .split(|b| *b == b',')
        .filter(|element| !element.iter().all(u8::is_ascii_whitespace))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges_after(values: &[&str]) -> Vec<String> {
        let mut builder = Request::builder().uri("/f");
        for value in values {
            builder = builder.header(RANGE, *value);
        }
        let request = builder.body(()).unwrap_or_default();
        single_range_only(request)
            .headers()
            .get_all(RANGE)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    #[test]
    fn one_range_passes() {
        assert_eq!(ranges_after(&["bytes=0-9"]), ["bytes=0-9"]);
        assert_eq!(ranges_after(&["bytes=-5"]), ["bytes=-5"]);
        assert_eq!(ranges_after(&["bytes=10-, "]), ["bytes=10-, "]);
        assert!(ranges_after(&[]).is_empty());
    }

    #[test]
    fn several_ranges_are_dropped() {
        assert!(ranges_after(&["bytes=0-1,5-9"]).is_empty());
        assert!(ranges_after(&["bytes=0-9", "bytes=20-29"]).is_empty());
        let amplifier = format!("bytes={}", vec!["0-"; 1000].join(","));
        assert!(ranges_after(&[amplifier.as_str()]).is_empty());
    }
}
