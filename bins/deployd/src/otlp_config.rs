//! The OpenTelemetry settings of deployd (`otlp_endpoint`, `otlp_service_name`, `otlp_resource_attributes`), validated at start with errors naming the bad value.

use std::collections::BTreeMap;

use anyhow::bail;

/// Where and as what deployd exports its traces (OTLP over HTTP, protobuf bodies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    /// The collector's traces URL: the configured base with `/v1/traces` appended.
    pub traces_url: url::Url,
    /// `service.name` of the resource.
    pub service_name: String,
    /// More resource attributes (`deployment.environment`, `service.instance.id`, ...).
    pub resource_attributes: BTreeMap<String, String>,
}

/// The service name when none is configured.
pub const DEFAULT_SERVICE_NAME: &str = "deployd";

/// Longest service name, attribute key or attribute value accepted.
const MAX_LEN: usize = 255;

impl OtlpConfig {
    /// The settings as given (flags over env over file, merged by the caller); `None`
    /// when no endpoint is set: tracing is off and the other settings are not used.
    pub fn from_settings(
        endpoint: Option<String>,
        service_name: Option<String>,
        resource_attributes: BTreeMap<String, String>,
    ) -> anyhow::Result<Option<Self>> {
        let Some(endpoint) = endpoint.filter(|e| !e.is_empty()) else {
            return Ok(None);
        };
        let traces_url = traces_url(&endpoint)?;
        let service_name = service_name.unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
        if !sane(&service_name) {
            bail!(
                "otlp_service_name `{service_name}` is invalid; expected 1 to {MAX_LEN} visible characters such as deployd"
            );
        }
        for (key, value) in &resource_attributes {
            check_attribute(key, value)?;
        }
        Ok(Some(Self {
            traces_url,
            service_name,
            resource_attributes,
        }))
    }
}

/// `endpoint` (the base URL of an OTLP/HTTP receiver, as `OTEL_EXPORTER_OTLP_ENDPOINT`)
/// with `/v1/traces` appended.
fn traces_url(endpoint: &str) -> anyhow::Result<url::Url> {
    let expected = "expected the base URL of an OTLP/HTTP receiver such as http://127.0.0.1:4318";
    let Ok(mut url) = url::Url::parse(endpoint) else {
        bail!("otlp_endpoint `{endpoint}` is not a URL; {expected}");
    };
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        bail!("otlp_endpoint `{endpoint}` is not an http(s) URL with a host; {expected}");
    }
    // Credentials in the URL would be shown wherever the setting is (logs, `ps`):
    // collectors that need them take headers (OTEL_EXPORTER_OTLP_HEADERS).
    if !url.username().is_empty() || url.password().is_some() {
        bail!(
            "otlp_endpoint `{}` carries credentials; put them in OTEL_EXPORTER_OTLP_HEADERS instead",
            url.host_str().unwrap_or("")
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        bail!("otlp_endpoint `{endpoint}` has a query or a fragment; {expected}");
    }
    let base = url.path().trim_end_matches('/');
    // The traces URL itself (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` style) would become
    // `.../v1/traces/v1/traces`: refused rather than guessed at.
    if base.ends_with("/v1/traces") {
        bail!(
            "otlp_endpoint `{endpoint}` ends with /v1/traces; expected the receiver's base URL (deployd appends /v1/traces) such as http://127.0.0.1:4318"
        );
    }
    let path = format!("{base}/v1/traces");
    url.set_path(&path);
    Ok(url)
}

/// Reads `key=value,key=value` (the `OTEL_RESOURCE_ATTRIBUTES` form) from a flag or
/// the environment; a key given twice is an error.
pub fn parse_attribute_list(text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            bail!(
                "otlp_resource_attributes entry `{pair}` is invalid; expected key=value such as deployment.environment=prod"
            );
        };
        let (key, value) = (key.trim(), value.trim());
        if out.insert(key.to_owned(), value.to_owned()).is_some() {
            bail!("otlp_resource_attributes names `{key}` twice; expected each key once");
        }
    }
    Ok(out)
}

fn check_attribute(key: &str, value: &str) -> anyhow::Result<()> {
    let key_ok = (1..=MAX_LEN).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !key_ok {
        bail!(
            "otlp_resource_attributes key `{key}` is invalid; expected 1 to {MAX_LEN} characters of A-Z a-z 0-9 . _ - such as deployment.environment"
        );
    }
    if key == "service.name" {
        bail!("otlp_resource_attributes sets `service.name`; use otlp_service_name instead");
    }
    // Always the build's version: a configured one would be silently overwritten.
    if key == "service.version" {
        bail!(
            "otlp_resource_attributes sets `service.version`; deployd sets it to its own version"
        );
    }
    if !sane(value) {
        let shown: String = value.chars().take(64).collect();
        bail!(
            "otlp_resource_attributes value {shown:?} of `{key}` is invalid; expected 1 to {MAX_LEN} visible characters"
        );
    }
    Ok(())
}

/// 1 to [`MAX_LEN`] bytes, no control characters.
fn sane(text: &str) -> bool {
    (1..=MAX_LEN).contains(&text.len()) && !text.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(endpoint: &str) -> anyhow::Result<Option<OtlpConfig>> {
        OtlpConfig::from_settings(Some(endpoint.to_owned()), None, BTreeMap::new())
    }

    #[test]
    fn no_endpoint_means_off() {
        assert_eq!(
            OtlpConfig::from_settings(None, Some(String::new()), BTreeMap::new()).unwrap(),
            None
        );
        assert_eq!(settings("").unwrap(), None);
    }

    #[test]
    fn the_traces_path_is_appended_to_the_base() {
        for (base, url) in [
            ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
            ("http://127.0.0.1:4318/", "http://127.0.0.1:4318/v1/traces"),
            (
                "https://otel.example/otlp/",
                "https://otel.example/otlp/v1/traces",
            ),
        ] {
            let c = settings(base).unwrap().unwrap();
            assert_eq!(c.traces_url.as_str(), url, "{base}");
            assert_eq!(c.service_name, DEFAULT_SERVICE_NAME);
        }
    }

    #[test]
    fn bad_endpoints_are_refused_by_value() {
        for (bad, expected) in [
            (
                "127.0.0.1:4318",
                "expected the base URL of an OTLP/HTTP receiver",
            ),
            (
                "not a url",
                "expected the base URL of an OTLP/HTTP receiver",
            ),
            ("grpc://127.0.0.1:4317", "not an http(s) URL"),
            ("http://127.0.0.1:4318/?x=1", "query or a fragment"),
            ("http://127.0.0.1:4318/v1/traces", "ends with /v1/traces"),
            (
                "http://127.0.0.1:4318/otlp/v1/traces/",
                "ends with /v1/traces",
            ),
        ] {
            let e = settings(bad).unwrap_err().to_string();
            assert!(e.contains(expected), "{bad}: {e}");
            assert!(e.contains(bad), "{bad}: {e}");
        }
        let e = settings("http://user:hunter2@otel.example:4318")
            .unwrap_err()
            .to_string();
        assert!(e.contains("credentials") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn service_name_and_attributes_are_checked() {
        let attrs =
            parse_attribute_list("deployment.environment=prod, service.instance.id=d1").unwrap();
        let c = OtlpConfig::from_settings(
            Some("http://127.0.0.1:4318".to_owned()),
            Some("deployd-eu".to_owned()),
            attrs,
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.service_name, "deployd-eu");
        assert_eq!(c.resource_attributes["deployment.environment"], "prod");
        assert_eq!(c.resource_attributes["service.instance.id"], "d1");

        let bad = |name: Option<&str>, attrs: &str| {
            let attrs = parse_attribute_list(attrs)?;
            OtlpConfig::from_settings(
                Some("http://127.0.0.1:4318".to_owned()),
                name.map(str::to_owned),
                attrs,
            )
        };
        for (name, attrs, expected) in [
            (Some(""), "", "otlp_service_name ``"),
            (Some("a\nb"), "", "otlp_service_name"),
            (None, "novalue", "entry `novalue`"),
            (None, "a=1,a=2", "`a` twice"),
            (None, "bad key=1", "key `bad key`"),
            (None, "service.name=x", "use otlp_service_name"),
            (None, "k=", "value \"\" of `k`"),
            (None, "service.version=9", "sets `service.version`"),
        ] {
            let e = bad(name, attrs).unwrap_err().to_string();
            assert!(e.contains(expected), "{name:?} {attrs}: {e}");
        }
    }
}
