//! Where a field of a YAML document is: the line and column of `identities[0].aws.roleArn`, so
//! that a value refused after parsing is reported where it was written.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser};

/// A position in a document: line and column, both from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// One step of a path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// `identities[0].aws.roleArn` as steps (a key cannot hold `.` or `[` in this notation).
pub fn steps(path: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    for part in path.split('.').filter(|part| !part.is_empty()) {
        let mut pieces = part.split('[');
        if let Some(key) = pieces.next().filter(|key| !key.is_empty()) {
            steps.push(Step::Key(key.to_owned()));
        }
        for index in pieces {
            match index.trim_end_matches(']').parse() {
                Ok(index) => steps.push(Step::Index(index)),
                Err(_) => steps.push(Step::Key(format!("[{index}"))),
            }
        }
    }
    steps
}

/// Where the value at each path starts, in one pass over `yaml`; `None` where the path is not in
/// the document (or the document does not parse).
pub fn locate(yaml: &str, paths: &[Vec<Step>]) -> Vec<Option<Position>> {
    // Several problems may name one path: each gets its position.
    let mut wanted: HashMap<&[Step], Vec<usize>> = HashMap::new();
    for (i, path) in paths.iter().enumerate() {
        wanted.entry(path.as_slice()).or_default().push(i);
    }
    let mut found = vec![None; paths.len()];
    // The path to the node being read, and per container whether a mapping key comes next.
    let mut path: Vec<Step> = Vec::new();
    let mut containers: Vec<Container> = Vec::new();
    for item in Parser::new_from_str(yaml) {
        let Ok((event, span)) = item else { break };
        let awaiting_key = containers
            .last()
            .is_some_and(|c| matches!(c, Container::Mapping { key_next: true }));
        match event {
            Event::Scalar(key, ..) if awaiting_key => {
                path.push(Step::Key(key.into_owned()));
                set_key_next(&mut containers, false);
            }
            Event::Scalar(..) | Event::Alias(_) | Event::SequenceStart(..) | Event::MappingStart(..) => {
                if awaiting_key {
                    // A complex key (a mapping or sequence as key): not in our notation.
                    break;
                }
                for &i in wanted.get(path.as_slice()).into_iter().flatten() {
                    found[i].get_or_insert(Position {
                        line: span.start.line(),
                        column: span.start.col() + 1,
                    });
                }
                match event {
                    Event::SequenceStart(..) => {
                        containers.push(Container::Sequence);
                        path.push(Step::Index(0));
                    }
                    Event::MappingStart(..) => containers.push(Container::Mapping { key_next: true }),
                    _ => next_value(&mut containers, &mut path),
                }
            }
            Event::SequenceEnd => {
                path.pop();
                containers.pop();
                next_value(&mut containers, &mut path);
            }
            Event::MappingEnd => {
                containers.pop();
                next_value(&mut containers, &mut path);
            }
            _ => {}
        }
    }
    found
}

enum Container {
    Mapping { key_next: bool },
    Sequence,
}

fn set_key_next(containers: &mut [Container], value: bool) {
    if let Some(Container::Mapping { key_next }) = containers.last_mut() {
        *key_next = value;
    }
}

/// A value was read whole: the next key of its mapping, or the next index of its sequence.
fn next_value(containers: &mut [Container], path: &mut Vec<Step>) {
    match containers.last_mut() {
        Some(Container::Mapping { key_next }) => {
            *key_next = true;
            path.pop();
        }
        Some(Container::Sequence) => {
            if let Some(Step::Index(index)) = path.last_mut() {
                *index += 1;
            }
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_and_indices_in_block_and_flow_style() {
        let yaml = "aws:\n  region: us-west-2\nidentities:\n  - namespace: a\n    aws: {roleArn: nope}\n  - {namespace: b, gcp: {serviceAccount: x}}\n";
        let at = |path: &str| locate(yaml, &[steps(path)])[0].map(|p| (p.line, p.column));
        assert_eq!(at("aws.region"), Some((2, 11)));
        assert_eq!(at("identities[0].aws.roleArn"), Some((5, 20)));
        assert_eq!(at("identities[1]"), Some((6, 5)));
        assert_eq!(at("identities[1].gcp.serviceAccount"), Some((6, 42)));
        assert_eq!(at("identities[2]"), None);
        assert_eq!(at("gcp.region"), None);
        assert_eq!(locate("{{{", &[steps("aws")]), [None]);
        // Two problems with one field: both are placed.
        let twice = locate(yaml, &[steps("aws.region"), steps("aws.region")]);
        assert_eq!(twice, [Some(Position { line: 2, column: 11 }); 2]);
    }

    #[test]
    fn a_block_scalar_starts_at_its_first_line() {
        let yaml = "kind: ConfigMap\ndata:\n  config.yaml: |\n    aws: {region: x}\n";
        let found = locate(yaml, &[vec![Step::Key("data".into()), Step::Key("config.yaml".into())]]);
        assert_eq!(found, [Some(Position { line: 4, column: 5 })]);
    }

    #[test]
    fn paths_as_steps() {
        assert_eq!(
            steps("identities[12].aws.roleArn"),
            [
                Step::Key("identities".into()),
                Step::Index(12),
                Step::Key("aws".into()),
                Step::Key("roleArn".into())
            ]
        );
    }
}
