//! The compose file (`docker-compose.yml`): the template's services with the image pinned by digest, the env-file, and the `stella.*` labels; other keys carried through.

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
    EnvFile,
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
    yaml_out::str_entry(&mut out, 0, "version", &template.version);
    yaml_out::open(&mut out, 0, "services");
    for svc in services {
        let t = svc.template;
        yaml_out::open(&mut out, 2, t.name.as_str());
        let mut items: BTreeMap<&str, Item<'_>> = t
            .passthrough
            .iter()
            .map(|(k, v)| (k.as_str(), Item::Value(v)))
            .collect();
        items.insert("image", Item::Image);
        items.insert("env_file", Item::EnvFile);
        items.insert("labels", Item::Labels);
        for (k, item) in items {
            match item {
                Item::Value(v) => yaml_out::entry(&mut out, 4, k, v),
                Item::Image => yaml_out::str_entry(&mut out, 4, k, &svc.image),
                Item::EnvFile => {
                    yaml_out::open(&mut out, 4, k);
                    out.push_str("      - ");
                    yaml_out::quoted(&mut out, &svc.env_file_name);
                    out.push('\n');
                }
                Item::Labels => string_map(
                    &mut out,
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
            yaml_out::entry(&mut out, 0, k, v);
        }
    }
    out
}

/// Appends each line of `text` as a `# ` comment.
pub(crate) fn comment(out: &mut String, text: &str) {
    for line in text.lines() {
        out.push_str("# ");
        out.push_str(line);
        out.push('\n');
    }
}
