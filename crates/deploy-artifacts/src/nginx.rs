//! The nginx config: one upstream per routed service and one server block, with blue-green cut-over (the live colour) and canary weights.
//!
//! The template's `http:` section says which paths go to which service and where
//! each colour of that service listens; the job's [`Traffic`] says which colour is
//! live and how much traffic the other colour gets as a canary. The file is an
//! `http`-context include (`upstream` + `server`).

use std::collections::BTreeMap;

use deploy_core::{Host, Name, Percent};
use serde::Deserialize;

use crate::errors::ArtifactError;
use crate::template::TemplateService;

/// One of the two deployments of a service in a blue-green setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Colour {
    Blue,
    Green,
}

impl Colour {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Blue => "blue",
            Self::Green => "green",
        }
    }

    /// The other colour.
    pub fn other(self) -> Self {
        match self {
            Self::Blue => Self::Green,
            Self::Green => Self::Blue,
        }
    }
}

/// Which colour serves traffic, and the canary share of the other colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    pub live: Colour,
    /// Share of requests sent to the other colour; `None` sends everything to `live`,
    /// 100 % is a full cut-over to the other colour.
    pub canary: Option<Percent>,
}

impl Traffic {
    /// All traffic to `live`.
    pub fn all_to(live: Colour) -> Self {
        Self { live, canary: None }
    }

    /// The nginx weight of each colour (0 = not in the upstream). Weights add up to 100.
    pub fn weights(self) -> [(Colour, u8); 2] {
        let canary = self.canary.map_or(0, Percent::get);
        [(self.live, 100 - canary), (self.live.other(), canary)]
    }
}

/// The `http:` section as written in the template.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct HttpSpec {
    #[serde(default = "default_listen")]
    listen: u16,
    #[serde(default)]
    server_name: Option<String>,
    routes: Vec<RouteSpec>,
}

fn default_listen() -> u16 {
    80
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteSpec {
    path: String,
    service: String,
    blue: String,
    green: String,
}

/// The validated `http:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRouting {
    pub listen: u16,
    /// `_` (any) when the template sets none.
    pub server_name: String,
    /// Routes in template order.
    pub routes: Vec<Route>,
}

/// `location <path>` goes to `service`, whose colours listen at `blue` and `green` (`host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub path: String,
    pub service: Name,
    pub blue: String,
    pub green: String,
}

impl HttpSpec {
    pub(crate) fn validate(
        self,
        services: &[TemplateService],
    ) -> Result<HttpRouting, ArtifactError> {
        if self.listen == 0 {
            return Err(ArtifactError::invalid(
                "http.listen",
                "0",
                "a port from 1 to 65535",
            ));
        }
        let server_name = match self.server_name {
            None => "_".to_owned(),
            Some(name) => {
                Host::parse(&name)
                    .map_err(|_| ArtifactError::invalid("http.serverName", &name, "a DNS name"))?;
                name
            }
        };
        let mut routes = Vec::with_capacity(self.routes.len());
        let mut addresses: BTreeMap<String, (String, String)> = BTreeMap::new();
        for (i, r) in self.routes.into_iter().enumerate() {
            let field = |k: &str| format!("http.routes[{i}].{k}");
            check_path(&field("path"), &r.path)?;
            if routes.iter().any(|seen: &Route| seen.path == r.path) {
                return Err(ArtifactError::invalid(
                    field("path"),
                    &r.path,
                    "each path once",
                ));
            }
            if !services.iter().any(|s| s.name.as_str() == r.service) {
                let available: Vec<_> = services.iter().map(|s| s.name.as_str()).collect();
                return Err(ArtifactError::invalid(
                    field("service"),
                    &r.service,
                    format!(
                        "a service of the template; available: {}",
                        available.join(", ")
                    ),
                ));
            }
            let service = Name::parse(&r.service).map_err(|source| ArtifactError::InvalidName {
                field: field("service"),
                source,
            })?;
            let blue = address(&field("blue"), &r.blue)?;
            let green = address(&field("green"), &r.green)?;
            let pair = (blue.clone(), green.clone());
            if let Some(known) = addresses.get(&r.service)
                && *known != pair
            {
                return Err(ArtifactError::invalid(
                    field("blue"),
                    format!("{blue} / {green}"),
                    format!(
                        "the same addresses as the other routes of `{}`: {} / {}",
                        r.service, known.0, known.1
                    ),
                ));
            }
            addresses.insert(r.service.clone(), pair);
            routes.push(Route {
                path: r.path,
                service,
                blue,
                green,
            });
        }
        Ok(HttpRouting {
            listen: self.listen,
            server_name,
            routes,
        })
    }
}

/// A `location` path: starts with `/`, only A-Z a-z 0-9 / _ . - ~, at most 1024 bytes.
fn check_path(field: &str, path: &str) -> Result<(), ArtifactError> {
    let ok = path.starts_with('/')
        && path.len() <= 1024
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '.' | '-' | '~'));
    if ok {
        Ok(())
    } else {
        Err(ArtifactError::invalid(
            field,
            path,
            "a path starting with `/` of A-Z a-z 0-9 / _ . - ~",
        ))
    }
}

/// Renders the nginx include for a routing the caller built (the engine's blue-green
/// cut-over, with the container addresses the executor reports), every value checked
/// as a template's `http:` section is: listen port, server name, paths, `host:port`s.
pub fn render_routing(
    header: &str,
    routing: &HttpRouting,
    traffic: Traffic,
) -> Result<String, ArtifactError> {
    if routing.listen == 0 {
        return Err(ArtifactError::invalid(
            "http.listen",
            "0",
            "a port from 1 to 65535",
        ));
    }
    if routing.server_name != "_" && Host::parse(&routing.server_name).is_err() {
        return Err(ArtifactError::invalid(
            "http.serverName",
            &routing.server_name,
            "a DNS name or `_`",
        ));
    }
    let mut checked = routing.clone();
    for (i, r) in checked.routes.iter_mut().enumerate() {
        let field = |k: &str| format!("http.routes[{i}].{k}");
        check_path(&field("path"), &r.path)?;
        r.blue = address(&field("blue"), &r.blue)?;
        r.green = address(&field("green"), &r.green)?;
    }
    Ok(render(header, Some(&checked), traffic))
}

/// `host:port` (IPv6 in brackets), normalised.
fn address(field: &str, value: &str) -> Result<String, ArtifactError> {
    let bad = || {
        ArtifactError::invalid(
            field,
            value,
            "`host:port`, e.g. `127.0.0.1:8080` or `[::1]:8080`",
        )
    };
    let (host, port) = value.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 {
        return Err(bad());
    }
    let host = Host::parse(host).map_err(|_| bad())?;
    Ok(format!("{}:{port}", host.to_authority()))
}

/// Renders the nginx include for `routing` (or a header-only file when the template routes nothing).
pub(crate) fn render(header: &str, routing: Option<&HttpRouting>, traffic: Traffic) -> String {
    let mut out = String::new();
    for line in header.lines() {
        out.push_str("# ");
        out.push_str(line);
        out.push('\n');
    }
    let [(live, live_weight), (other, other_weight)] = traffic.weights();
    out.push_str(&format!(
        "# traffic: {live} live ({live_weight}%), {other} canary ({other_weight}%)\n"
    ));
    let Some(routing) = routing else {
        return out;
    };
    let mut upstreams: Vec<&Route> = Vec::new();
    for r in &routing.routes {
        if !upstreams.iter().any(|u| u.service == r.service) {
            upstreams.push(r);
        }
    }
    upstreams.sort_by(|a, b| a.service.cmp(&b.service));
    for r in upstreams {
        out.push_str(&format!("\nupstream stella-{} {{\n", r.service));
        for (colour, weight) in traffic.weights() {
            if weight == 0 {
                continue;
            }
            let addr = match colour {
                Colour::Blue => &r.blue,
                Colour::Green => &r.green,
            };
            out.push_str(&format!("    server {addr} weight={weight}; # {colour}\n"));
        }
        out.push_str("}\n");
    }
    out.push_str(&format!(
        "\nserver {{\n    listen {};\n    server_name {};\n",
        routing.listen, routing.server_name
    ));
    for r in &routing.routes {
        out.push_str(&format!(
            "\n    location {} {{\n        proxy_pass http://stella-{};\n        proxy_set_header Host $host;\n        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n        proxy_set_header X-Forwarded-Proto $scheme;\n    }}\n",
            r.path, r.service
        ));
    }
    out.push_str("}\n");
    out
}

impl std::fmt::Display for Colour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routing(green: &str) -> HttpRouting {
        HttpRouting {
            listen: 8081,
            server_name: "_".to_owned(),
            routes: vec![Route {
                path: "/".to_owned(),
                service: Name::parse("web").unwrap(),
                blue: "127.0.0.1:40001".to_owned(),
                green: green.to_owned(),
            }],
        }
    }

    #[test]
    fn a_caller_built_routing_is_checked_and_rendered_with_the_live_colour() {
        let green_live = render_routing(
            "cut-over",
            &routing("127.0.0.1:40002"),
            Traffic::all_to(Colour::Green),
        )
        .unwrap();
        assert!(
            green_live.contains("    server 127.0.0.1:40002 weight=100; # green\n"),
            "{green_live}"
        );
        assert!(!green_live.contains("40001"), "{green_live}");
        assert!(green_live.contains("listen 8081;"), "{green_live}");
        let blue_live = render_routing(
            "cut back",
            &routing("127.0.0.1:40002"),
            Traffic::all_to(Colour::Blue),
        )
        .unwrap();
        assert!(
            blue_live.contains("    server 127.0.0.1:40001 weight=100; # blue\n"),
            "{blue_live}"
        );
        let err = render_routing(
            "x",
            &routing("127.0.0.1:1; evil"),
            Traffic::all_to(Colour::Green),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("http.routes[0].green") && err.contains("127.0.0.1:1; evil"),
            "{err}"
        );
    }
}
