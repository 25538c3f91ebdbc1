//! This host's clock against AWS's. SigV4 refuses a request signed more than 5 minutes away
//! from the service's clock (`Signature expired`, `RequestTimeTooSkewed`): remote_write
//! then fails with 403s that look like a permissions problem. So the proxy reads the `Date`
//! of every upstream answer and exports how far this clock is ahead of it
//! (`moninit_proxy_clock_skew_seconds`; `Date` has one-second resolution and is stamped
//! before the answer travels, so the figure is exact to about a second), and the first
//! refusal for skew is logged once, with the skew and what to do.

use std::time::SystemTime;

use http::HeaderValue;

/// How far `now` is ahead of the `Date` an AWS answer carries, in seconds (negative: this
/// clock is behind). `None` when the header is not an HTTP date.
pub fn skew(date: &HeaderValue, now: SystemTime) -> Option<f64> {
    let theirs = httpdate::parse_http_date(date.to_str().ok()?).ok()?;
    Some(match now.duration_since(theirs) {
        Ok(ahead) => ahead.as_secs_f64(),
        Err(behind) => -behind.duration().as_secs_f64(),
    })
}

/// Whether an AWS error body says the signature's time is too far from the service's.
pub fn is_skew_refusal(body: &[u8]) -> bool {
    let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    // A clock behind AWS's signs "expired"; one ahead signs "not yet current".
    has(b"RequestTimeTooSkewed") || has(b"Signature expired") || has(b"Signature not yet current")
}

/// The log line's advice for a measured skew.
pub fn advice(skew: Option<f64>) -> String {
    let measured = match skew {
        Some(s) if s >= 0.0 => format!("this clock is {s:.0} s ahead of AWS's"),
        Some(s) => format!("this clock is {:.0} s behind AWS's", -s),
        None => "the upstream's answer carried no Date to measure the skew".to_owned(),
    };
    format!(
        "{measured}; SigV4 refuses requests signed more than 5 minutes off: synchronise the \
         clock (chrony or systemd-timesyncd; on EC2 the Amazon Time Sync Service at 169.254.169.123)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn skew_is_how_far_this_clock_is_ahead() {
        let date = HeaderValue::from_static("Thu, 26 Nov 2026 12:00:00 GMT");
        let theirs = httpdate::parse_http_date("Thu, 26 Nov 2026 12:00:00 GMT").unwrap();
        assert_eq!(skew(&date, theirs + Duration::from_secs(90)), Some(90.0));
        assert_eq!(skew(&date, theirs - Duration::from_secs(400)), Some(-400.0));
        assert_eq!(skew(&HeaderValue::from_static("yesterday"), theirs), None);
    }

    #[test]
    fn refusals_for_time_are_recognised() {
        assert!(is_skew_refusal(br#"{"message":"Signature expired: 20261126T120000Z is now earlier than 20261126T120500Z"}"#));
        assert!(is_skew_refusal(b"<Code>RequestTimeTooSkewed</Code>"));
        assert!(is_skew_refusal(br#"{"message":"Signature not yet current: 20261126T121000Z is still later than 20261126T120500Z"}"#));
        assert!(!is_skew_refusal(br#"{"message":"not authorized"}"#));
        assert!(advice(Some(-400.4)).starts_with("this clock is 400 s behind AWS's"));
    }
}
