//! The Tera engine: built-in templates, overrides from the inputs, moninit's filters, and
//! errors that name the template, where it came from and the line at fault.

use std::collections::{BTreeMap, HashMap};

use super::Error;

/// The built-in templates, compiled into the binary: (name, source).
pub const BUILTIN: [(&str, &str); 4] = [
    (
        "prometheus.yml",
        include_str!("../../templates/prometheus.yml.tera"),
    ),
    (
        "grafana.ini",
        include_str!("../../templates/grafana.ini.tera"),
    ),
    (
        "grafana-datasources.yaml",
        include_str!("../../templates/grafana-datasources.yaml.tera"),
    ),
    (
        "grafana-dashboards.yaml",
        include_str!("../../templates/grafana-dashboards.yaml.tera"),
    ),
];

pub struct Engine {
    tera: tera::Tera,
    /// name → (source text, origin) for every registered template.
    sources: BTreeMap<String, (String, String)>,
}

impl Engine {
    /// Built-ins first, then `overrides` (name, text, origin) replacing or adding templates.
    pub fn new(overrides: Vec<(String, String, String)>) -> Result<Self, Error> {
        let mut sources: BTreeMap<String, (String, String)> = BUILTIN
            .iter()
            .map(|(name, text)| {
                (
                    (*name).to_owned(),
                    (
                        (*text).to_owned(),
                        format!("built-in templates/{name}.tera"),
                    ),
                )
            })
            .collect();
        for (name, text, origin) in overrides {
            sources.insert(name, (text, origin));
        }
        let mut tera = tera::Tera::default();
        tera.autoescape_on(vec![]);
        tera.register_filter("to_yaml", to_yaml);
        // Add one at a time so that a syntax error names its template.
        for (name, (text, origin)) in &sources {
            tera.add_raw_template(name, text)
                .map_err(|e| Error::Template {
                    name: name.clone(),
                    origin: origin.clone(),
                    line: None,
                    message: crate::source::chain(&e),
                })?;
        }
        Ok(Engine { tera, sources })
    }

    pub fn origin(&self, name: &str) -> String {
        self.sources
            .get(name)
            .map(|(_, o)| o.clone())
            .unwrap_or_default()
    }

    pub fn render(&self, name: &str, context: &tera::Context) -> Result<String, Error> {
        self.tera.render(name, context).map_err(|e| {
            let message = crate::source::chain(&e);
            let (text, origin) = self.sources.get(name).cloned().unwrap_or_default();
            let line = missing_variable(&message).and_then(|var| line_of(&text, &var));
            Error::Template {
                name: name.to_owned(),
                origin,
                line,
                message: crate::secret::mask(&message),
            }
        })
    }
}

/// The variable named by Tera's "Variable `x.y` not found in context" message.
fn missing_variable(message: &str) -> Option<String> {
    let rest = message.split("Variable `").nth(1)?;
    Some(rest.split('`').next()?.to_owned())
}

/// 1-based line of the first use of `var` inside a `{{ }}` or `{% %}` tag.
fn line_of(text: &str, var: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            line.match_indices(var).any(|(at, _)| {
                let before = &line[..at];
                let after = &line[at + var.len()..];
                let opened = before.rfind("{{").max(before.rfind("{%"));
                let closed = before.rfind("}}").max(before.rfind("%}"));
                let ident_continues = after.starts_with(|c: char| c.is_alphanumeric() || c == '_');
                opened.is_some() && opened > closed && !ident_continues
            })
        })
        .map(|i| i + 1)
}

/// `{{ value | to_yaml(indent=2) }}`: the value as block YAML, every line indented.
fn to_yaml(value: &tera::Value, args: &HashMap<String, tera::Value>) -> tera::Result<tera::Value> {
    let indent = match args.get("indent") {
        Some(v) => v
            .as_u64()
            .ok_or_else(|| tera::Error::msg("to_yaml: `indent` must be a number"))?
            as usize,
        None => 0,
    };
    let yaml =
        serde_yaml_ng::to_string(value).map_err(|e| tera::Error::msg(format!("to_yaml: {e}")))?;
    let pad = " ".repeat(indent);
    let out: Vec<String> = yaml
        .trim_end_matches('\n')
        .lines()
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{pad}{l}")
            }
        })
        .collect();
    Ok(tera::Value::String(out.join("\n")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_line_of_an_undefined_variable() {
        let text = "a: 1\nb: {{ params.x }}\nc: {{ params.xy }}\n";
        assert_eq!(line_of(text, "params.xy"), Some(3));
        assert_eq!(line_of(text, "params.x"), Some(2));
        assert_eq!(
            missing_variable("Variable `params.x` not found in context while rendering 'p'"),
            Some("params.x".into())
        );
    }

    #[test]
    fn to_yaml_indents_every_line() {
        let v = serde_json::json!([{"job_name": "a", "static_configs": [{"targets": ["x:1"]}]}]);
        let out = to_yaml(
            &v,
            &HashMap::from([("indent".to_owned(), serde_json::json!(2))]),
        )
        .unwrap();
        assert_eq!(
            out.as_str().unwrap(),
            "  - job_name: a\n    static_configs:\n    - targets:\n      - x:1"
        );
    }
}
