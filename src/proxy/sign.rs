//! SigV4 signing, pure: the time and credentials are passed in, the headers to add come out.
//!
//! moninit canonicalises the query itself and sends upstream exactly the string it signed:
//! every key and value is decoded once (`+` is a space, as HTML forms and Grafana send it)
//! and re-encoded with SigV4's strict set (only `A-Z a-z 0-9 - _ . ~` left bare). PromQL is
//! full of `{ } " = ~ ! +`, spaces and non-ASCII; any difference between the bytes signed and
//! the bytes sent is a 403 from AMP, so there is exactly one encoding and it is this one.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};

/// SigV4's unreserved set: everything else is percent-encoded.
const STRICT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `raw` (as received) in the one encoding moninit signs and sends. Order is kept: SigV4
/// sorts for the signature only, and repeated keys (`match[]`) keep their order.
pub fn canonical_query(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() + raw.len() / 4);
    for (key, value) in form_urlencoded::parse(raw.as_bytes()) {
        if !out.is_empty() {
            out.push('&');
        }
        out.extend(percent_encoding::utf8_percent_encode(&key, STRICT));
        out.push('=');
        out.extend(percent_encoding::utf8_percent_encode(&value, STRICT));
    }
    out
}

/// What the body contributes to the signature.
#[derive(Clone, Copy, Debug)]
pub enum Payload<'a> {
    /// Lowercase hex SHA-256 of the body, computed while it was read.
    Sha256(&'a str),
    /// `UNSIGNED-PAYLOAD` (`--unsigned-payload`): the body is not covered by the signature.
    Unsigned,
    /// The body itself (tests and small bodies).
    Bytes(&'a [u8]),
}

/// How to sign for one service.
#[derive(Clone, Debug)]
pub struct Signer {
    pub service: String,
    pub region: String,
    /// Add `x-amz-content-sha256` (AMP and S3 expect it).
    pub content_sha256_header: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("signing failed: {0}")]
pub struct Error(String);

impl Signer {
    /// S3 signs the path as sent; every other service normalises and double-encodes it.
    fn settings(&self) -> SigningSettings {
        let mut s = SigningSettings::default();
        s.payload_checksum_kind = if self.content_sha256_header {
            PayloadChecksumKind::XAmzSha256
        } else {
            PayloadChecksumKind::NoHeader
        };
        if self.service == "s3" {
            s.percent_encoding_mode = PercentEncodingMode::Single;
            s.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        }
        s
    }

    /// Signs a request for `uri` (absolute, query already canonical) whose signed headers are
    /// `headers` (must include `host`); returns the headers to add (Authorization,
    /// X-Amz-Date, and X-Amz-Security-Token / x-amz-content-sha256 when they apply).
    pub fn sign<'h>(
        &self,
        method: &'h str,
        uri: &'h str,
        headers: impl Iterator<Item = (&'h str, &'h str)>,
        payload: Payload<'h>,
        credentials: &Credentials,
        time: SystemTime,
    ) -> Result<Vec<(String, String)>, Error> {
        let identity = credentials.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(&self.service)
            .time(time)
            .settings(self.settings())
            .build()
            .map_err(|e| Error(e.to_string()))?
            .into();
        let body = match payload {
            Payload::Sha256(hex) => SignableBody::Precomputed(hex.to_owned()),
            Payload::Unsigned => SignableBody::UnsignedPayload,
            Payload::Bytes(b) => SignableBody::Bytes(b),
        };
        let request =
            SignableRequest::new(method, uri, headers, body).map_err(|e| Error(e.to_string()))?;
        let (instructions, _) = sign(request, &params)
            .map_err(|e| Error(e.to_string()))?
            .into_parts();
        Ok(instructions
            .headers()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promql_is_encoded_once_and_strictly() {
        assert_eq!(
            canonical_query("query=sum(rate(x{job=~\"a|b\",le!=\"+Inf\"}[5m]))+by+(job)&time=1"),
            "query=sum%28rate%28x%7Bjob%3D~%22a%7Cb%22%2Cle%21%3D%22%20Inf%22%7D%5B5m%5D%29%29%20by%20%28job%29&time=1"
        );
        assert_eq!(canonical_query("q=a%2Bb%20c"), "q=a%2Bb%20c");
        assert_eq!(
            canonical_query("match%5B%5D=up&match[]=%E2%9C%93"),
            "match%5B%5D=up&match%5B%5D=%E2%9C%93"
        );
        assert_eq!(canonical_query(""), "");
        assert_eq!(canonical_query("flag"), "flag=");
    }

    #[test]
    fn canonical_query_is_idempotent() {
        let once = canonical_query("query=up{job=\"x y\"}+%2B+1&é=ü");
        assert_eq!(canonical_query(&once), once);
    }
}
