//! Reads every parameter under an SSM path with `GetParametersByPath` (recursive, decrypted).
//!
//! The loop follows `NextToken` until it is absent, even across empty pages: SSM may return
//! an empty page with a token when filters or KMS throttling cut a page short, and stopping
//! there would silently drop parameters. SecureString values become [`Secret`]s at once.

use aws_sdk_ssm::types::ParameterType;

use super::{Error, ParamValue, Params, Snapshot};
use crate::secret::Secret;

/// Upper bound on pages, so a service that kept returning tokens cannot hang boot.
const MAX_PAGES: usize = 10_000;

/// The path as the SSM API takes it: without its trailing `/` (but `/` itself kept).
pub(crate) fn query_path(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/"
    } else {
        trimmed
    }
}

/// A parameter's name under `query_path`, as a template sees it.
pub(crate) fn relative<'a>(name: &'a str, query_path: &str) -> &'a str {
    name.strip_prefix(query_path).unwrap_or(name)
}

/// A fetched parameter's full name and value; SecureStrings become [`Secret`]s at once.
pub(crate) fn value(p: &aws_sdk_ssm::types::Parameter) -> Option<(String, ParamValue)> {
    let (name, value) = (p.name()?, p.value()?);
    let value = match p.r#type() {
        Some(ParameterType::SecureString) => ParamValue::Secret {
            value: Secret::new(value),
            origin: name.to_owned(),
        },
        _ => ParamValue::Plain {
            value: value.to_owned(),
            origin: name.to_owned(),
        },
    };
    Some((name.to_owned(), value))
}

pub async fn fetch(client: &aws_sdk_ssm::Client, path: &str) -> Result<Snapshot, Error> {
    let origin = format!("ssm:{path}");
    let query_path = query_path(path);
    let mut params = Params::default();
    let mut token: Option<String> = None;
    let mut count = 0usize;
    for _ in 0..MAX_PAGES {
        let page = client
            .get_parameters_by_path()
            .path(query_path)
            .recursive(true)
            .with_decryption(true)
            .max_results(10)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| Error::aws(&origin, "GetParametersByPath", &e))?;
        for p in page.parameters() {
            let Some((name, value)) = value(p) else {
                continue;
            };
            params.insert(relative(&name, query_path), value)?;
            count += 1;
        }
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_owned()),
            _ => break,
        }
    }
    if token.is_some() {
        return Err(Error::Input {
            origin,
            message: format!("more than {MAX_PAGES} pages of parameters; refusing to continue"),
        });
    }
    if count == 0 {
        return Err(Error::Input {
            origin,
            message: "no parameters under this path (check the path and ssm:GetParametersByPath permission)".into(),
        });
    }
    tracing::debug!(source = %origin, parameters = count, "read SSM parameters");
    Ok(Snapshot {
        files: Default::default(),
        params,
    })
}
