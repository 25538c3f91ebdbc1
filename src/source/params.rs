//! Template parameters: a tree built from `/`-separated names.
//!
//! `/monitoring/prod/grafana/admin_password` under the source path `/monitoring/prod/`
//! becomes `params.grafana.admin_password`. A name that is both a value and a parent of other
//! names (`a` and `a/b`) is an error naming both origins: silently dropping one would render
//! the wrong config.

use std::collections::BTreeMap;

use crate::secret::Secret;

use super::Error;

/// One parameter's value and where it came from.
#[derive(Clone, Debug)]
pub enum ParamValue {
    Plain { value: String, origin: String },
    Secret { value: Secret, origin: String },
}

impl ParamValue {
    pub fn origin(&self) -> &str {
        match self {
            ParamValue::Plain { origin, .. } | ParamValue::Secret { origin, .. } => origin,
        }
    }
}

#[derive(Clone, Debug)]
enum Node {
    Leaf(ParamValue),
    Branch(BTreeMap<String, Node>),
}

/// The parameter tree.
#[derive(Clone, Debug, Default)]
pub struct Params {
    root: BTreeMap<String, Node>,
}

impl Params {
    /// Inserts `value` at the `/`-separated `name` (leading and trailing `/` ignored).
    pub fn insert(&mut self, name: &str, value: ParamValue) -> Result<(), Error> {
        let parts: Vec<&str> = name.split('/').filter(|p| !p.is_empty()).collect();
        let Some((last, parents)) = parts.split_last() else {
            return Err(Error::Params(format!(
                "{}: empty parameter name",
                value.origin()
            )));
        };
        let mut map = &mut self.root;
        for part in parents {
            let node = map
                .entry((*part).to_owned())
                .or_insert_with(|| Node::Branch(BTreeMap::new()));
            map = match node {
                Node::Branch(m) => m,
                Node::Leaf(existing) => {
                    return Err(conflict(existing.origin(), value.origin()));
                }
            };
        }
        match map.get(*last) {
            Some(Node::Branch(children)) => {
                let child = first_leaf_origin(children).unwrap_or_default();
                Err(conflict(&child, value.origin()))
            }
            Some(Node::Leaf(_)) | None => {
                map.insert((*last).to_owned(), Node::Leaf(value));
                Ok(())
            }
        }
    }

    /// Overlays `other` onto `self`; same-named values are replaced.
    pub fn merge(&mut self, other: Params) -> Result<(), Error> {
        for (name, value) in other.flatten() {
            self.insert(&name, value)?;
        }
        Ok(())
    }

    /// Every value with its full `/`-joined name, in name order.
    pub fn flatten(self) -> Vec<(String, ParamValue)> {
        fn walk(prefix: &str, map: BTreeMap<String, Node>, out: &mut Vec<(String, ParamValue)>) {
            for (k, node) in map {
                let name = if prefix.is_empty() {
                    k
                } else {
                    format!("{prefix}/{k}")
                };
                match node {
                    Node::Leaf(v) => out.push((name, v)),
                    Node::Branch(m) => walk(&name, m, out),
                }
            }
        }
        let mut out = Vec::new();
        walk("", self.root, &mut out);
        out
    }

    /// The value at a `/`-separated name, if any.
    pub fn get(&self, name: &str) -> Option<&ParamValue> {
        let mut map = &self.root;
        let parts: Vec<&str> = name.split('/').filter(|p| !p.is_empty()).collect();
        let (last, parents) = parts.split_last()?;
        for p in parents {
            match map.get(*p)? {
                Node::Branch(m) => map = m,
                Node::Leaf(_) => return None,
            }
        }
        match map.get(*last)? {
            Node::Leaf(v) => Some(v),
            Node::Branch(_) => None,
        }
    }

    /// Every secret value in the tree.
    pub fn secrets(&self) -> Vec<&Secret> {
        fn walk<'a>(map: &'a BTreeMap<String, Node>, out: &mut Vec<&'a Secret>) {
            for node in map.values() {
                match node {
                    Node::Leaf(ParamValue::Secret { value, .. }) => out.push(value),
                    Node::Leaf(ParamValue::Plain { .. }) => {}
                    Node::Branch(m) => walk(m, out),
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root, &mut out);
        out
    }

    pub fn is_empty(&self) -> bool {
        self.root.is_empty()
    }

    /// The tree as JSON for templates: secrets exposed (templates must be able to write them
    /// into files; the registry masks them everywhere else).
    pub fn to_json(&self) -> serde_json::Value {
        fn walk(map: &BTreeMap<String, Node>) -> serde_json::Value {
            let mut obj = serde_json::Map::new();
            for (k, node) in map {
                let v = match node {
                    Node::Leaf(ParamValue::Plain { value, .. }) => {
                        serde_json::Value::String(value.clone())
                    }
                    Node::Leaf(ParamValue::Secret { value, .. }) => {
                        serde_json::Value::String(value.expose().to_owned())
                    }
                    Node::Branch(m) => walk(m),
                };
                obj.insert(k.clone(), v);
            }
            serde_json::Value::Object(obj)
        }
        walk(&self.root)
    }
}

fn first_leaf_origin(map: &BTreeMap<String, Node>) -> Option<String> {
    map.values().find_map(|n| match n {
        Node::Leaf(v) => Some(v.origin().to_owned()),
        Node::Branch(m) => first_leaf_origin(m),
    })
}

fn conflict(a: &str, b: &str) -> Error {
    Error::Params(format!(
        "parameters {a} and {b} conflict: one name is both a value and a folder of other values"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(v: &str, origin: &str) -> ParamValue {
        ParamValue::Plain {
            value: v.into(),
            origin: origin.into(),
        }
    }

    #[test]
    fn nested_names_become_a_tree() {
        let mut p = Params::default();
        p.insert("workspace_id", plain("ws-1", "/m/workspace_id"))
            .unwrap();
        p.insert(
            "grafana/admin_password",
            plain("pw", "/m/grafana/admin_password"),
        )
        .unwrap();
        assert_eq!(
            p.to_json(),
            serde_json::json!({"workspace_id": "ws-1", "grafana": {"admin_password": "pw"}})
        );
    }

    #[test]
    fn value_and_folder_with_one_name_is_an_error_naming_both() {
        let mut p = Params::default();
        p.insert("a", plain("1", "/m/a")).unwrap();
        let err = p
            .insert("a/b", plain("2", "/m/a/b"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("parameters /m/a and /m/a/b conflict"), "{err}");
        let mut p = Params::default();
        p.insert("a/b", plain("2", "/m/a/b")).unwrap();
        let err = p.insert("a", plain("1", "/m/a")).unwrap_err().to_string();
        assert!(err.contains("parameters /m/a/b and /m/a conflict"), "{err}");
    }

    #[test]
    fn later_values_replace_earlier_ones() {
        let mut a = Params::default();
        a.insert("x", plain("1", "first")).unwrap();
        let mut b = Params::default();
        b.insert("x", plain("2", "second")).unwrap();
        a.merge(b).unwrap();
        assert_eq!(a.get("x").unwrap().origin(), "second");
    }
}
