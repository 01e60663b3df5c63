//! The compose file (`docker-compose.yml`): the template's services, every key carried through, with the image pinned by digest, the environment inline (merged) and the `stella.*` labels; the compose lock is the same document plus its generation record.

use std::collections::BTreeMap;

use serde_yaml::Value;

use crate::render::ResolvedService;
use crate::template::ComposeTemplate;
use crate::yaml_out;

/// Compose reads `$` as interpolation; `$$` is a literal `$`.
pub(crate) fn escape_dollars(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('$') {
        std::borrow::Cow::Owned(s.replace('$', "$$"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// Appends `key:` and a mapping of string values, `$` escaped for Compose.
pub(crate) fn string_map<'a>(
    out: &mut String,
    level: usize,
    key: &str,
    map: impl IntoIterator<Item = (&'a str, &'a str)>,
) {
    yaml_out::open(out, level, key);
    for (k, v) in map {
        yaml_out::str_entry(out, level + 2, k, &escape_dollars(v));
    }
}

enum Item<'a> {
    Value(&'a Value),
    Image,
    Environment,
    Labels,
}

/// Renders the compose file; `header` becomes leading comment lines.
pub(crate) fn render(
    header: &str,
    template: &ComposeTemplate,
    services: &[ResolvedService<'_>],
) -> String {
    let mut out = String::with_capacity(256 + services.len() * 640);
    comment(&mut out, header);
    body(&mut out, template, services);
    out
}

/// Appends `version`, `services` and the top-level `volumes` and `networks`: the
/// part the compose file and the lock share. The environment travels inline, as a
/// YAML string per variable (`$` written `$$`), which carries any value a container
/// can hold.
pub(crate) fn body(out: &mut String, template: &ComposeTemplate, services: &[ResolvedService<'_>]) {
    yaml_out::str_entry(out, 0, "version", &template.version);
    yaml_out::open(out, 0, "services");
    for svc in services {
        let t = svc.template;
        yaml_out::open(out, 2, t.name.as_str());
        let mut items: BTreeMap<&str, Item<'_>> = t
            .passthrough
            .iter()
            .map(|(k, v)| (k.as_str(), Item::Value(v)))
            .collect();
        items.insert("image", Item::Image);
        items.insert("environment", Item::Environment);
        items.insert("labels", Item::Labels);
        for (k, item) in items {
            match item {
                Item::Value(v) => yaml_out::entry(out, 4, k, v),
                Item::Image => yaml_out::str_entry(out, 4, k, &svc.image),
                Item::Environment => string_map(
                    out,
                    4,
                    k,
                    svc.env.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                ),
                Item::Labels => string_map(
                    out,
                    4,
                    k,
                    svc.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                ),
            }
        }
    }
    for (k, v) in [
        ("volumes", &template.volumes),
        ("networks", &template.networks),
    ] {
        if let Some(v) = v {
            yaml_out::entry(out, 0, k, v);
        }
    }
}

/// Appends each line of `text` as a `# ` comment.
pub(crate) fn comment(out: &mut String, text: &str) {
    for line in text.lines() {
        out.push_str("# ");
        out.push_str(line);
        out.push('\n');
    }
}
