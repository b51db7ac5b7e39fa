//! `recur config`: the effective configuration, key by key, with the layer
//! that set each one and secrets redacted.

use std::path::Path;

use recur::config::{self, Config, is_secret};

/// Prints the merged configuration as TOML, each key commented with its layer.
pub fn config(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    flags: toml::Table,
) -> anyhow::Result<()> {
    let layers = Config::layers(file, env, flags)?;
    let mut merged = toml::Table::new();
    for (_, t) in &layers {
        config::merge(&mut merged, t.clone());
    }
    // The same checks every command makes: an invalid layer stack is an error here too.
    Config::from_table(merged.clone(), "the layered configuration".into())?;
    print!("{}", render(&merged, &layers));
    Ok(())
}

/// The TOML text: scalar keys of each table, then its sub-tables.
fn render(merged: &toml::Table, layers: &[(String, toml::Table)]) -> String {
    let mut out = String::new();
    section(&mut out, &mut Vec::new(), merged, layers);
    out
}

fn section(
    out: &mut String,
    path: &mut Vec<String>,
    table: &toml::Table,
    layers: &[(String, toml::Table)],
) {
    let scalars: Vec<_> = table.iter().filter(|(_, v)| !v.is_table()).collect();
    if !path.is_empty() && (!scalars.is_empty() || table.is_empty()) {
        out.push_str(&format!("\n[{}]\n", path.join(".")));
    }
    for (k, v) in scalars {
        path.push(k.clone());
        let secret =
            path.len() == 3 && path[0] == "kafka" && path[1] == "properties" && is_secret(k);
        let shown = if secret {
            "\"<redacted>\"".to_string()
        } else {
            v.to_string()
        };
        out.push_str(&format!(
            "{} = {shown}  # {}\n",
            quote(k),
            layer_of(path, layers)
        ));
        path.pop();
    }
    for (k, v) in table {
        if let toml::Value::Table(sub) = v {
            path.push(k.clone());
            section(out, path, sub, layers);
            path.pop();
        }
    }
}

/// The name of the highest layer that sets `path`.
fn layer_of<'a>(path: &[String], layers: &'a [(String, toml::Table)]) -> &'a str {
    layers
        .iter()
        .rev()
        .find(|(_, t)| lookup(t, path).is_some())
        .map_or("default", |(name, _)| name.as_str())
}

fn lookup<'a>(t: &'a toml::Table, path: &[String]) -> Option<&'a toml::Value> {
    let (last, parents) = path.split_last()?;
    let mut t = t;
    for p in parents {
        t = t.get(p)?.as_table()?;
    }
    t.get(last)
}

/// A bare key when TOML allows one, else quoted (`"sasl.password"`).
fn quote(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        toml::Value::String(k.to_string()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_names_its_layer_and_secrets_are_redacted() {
        let mut flags = toml::Table::new();
        flags.insert("kafka".into(), toml::toml! { group = "from-flag" }.into());
        let env = [
            ("RECUR_KAFKA__GROUP".to_string(), "from-env".to_string()),
            ("RECUR_MODEL__HIDDEN".to_string(), "48".to_string()),
            (
                "RECUR_KAFKA__PROPERTIES__SASL_PASSWORD".to_string(),
                "hunter2".to_string(),
            ),
        ];
        let layers = Config::layers(None, env, flags).unwrap();
        let mut merged = toml::Table::new();
        for (_, t) in &layers {
            config::merge(&mut merged, t.clone());
        }
        let text = render(&merged, &layers);
        assert!(text.contains("group = \"from-flag\"  # flag\n"), "{text}");
        assert!(text.contains("hidden = 48  # env\n"), "{text}");
        let default_topic = Config::load(None).unwrap().kafka.input_topic;
        assert!(
            text.contains(&format!("input_topic = \"{default_topic}\"  # default\n")),
            "{text}"
        );
        assert!(
            text.contains("\"sasl.password\" = \"<redacted>\"  # env"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
        // What it prints is a configuration recur reads back as the same one.
        let stripped: String = text
            .lines()
            .map(|l| l.split("  # ").next().unwrap().to_string() + "\n")
            .collect();
        let back: toml::Table = stripped.parse().unwrap();
        assert_eq!(back["model"]["hidden"].as_integer(), Some(48));
    }
}
