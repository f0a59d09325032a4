//! Resuming `fit`: what it adds to a checkpoint beside the model, the optimizer and
//! the random stream (epochs done, the data order, the history so far and every
//! callback's state, all under `fit.`), and how a resumed `fit` puts it back.

use std::path::Path;

use super::callbacks::{Callback, CallbackState};
use super::history::{History, LrChange};
use super::model::Model;
use crate::data::DataLoader;
use crate::io::{read_checkpoint, save_checkpoint_with, Extra};
use crate::nn::Module;
use crate::{Error, Result};

/// Writes a checkpoint of `model` after `epochs_done` epochs.
pub(crate) fn save<M: Module>(
    model: &Model<M>,
    path: &Path,
    epochs_done: usize,
    train: &DataLoader,
    callbacks: &[Box<dyn Callback>],
    history: &History,
) -> Result<()> {
    let mut extra = Extra::default();
    let (shuffle, loader_epoch) = train.order_state();
    let mut put = |key: &str, value: String| extra.meta.insert(key.to_string(), value);
    put("epochs", epochs_done.to_string());
    put("shuffle", shuffle.map_or("none".into(), |s| s.to_string()));
    put("loader_epoch", loader_epoch.to_string());
    put("lr", numbers(&history.lr));
    for (name, values) in &history.history {
        put(&format!("history.{name}"), numbers(values));
    }
    let changes: Vec<String> = (history.lr_changes.iter())
        .map(|c| format!("{}\t{:?}\t{:?}\t{}", c.epoch, c.from, c.to, escape(&c.reason)))
        .collect();
    put("lr_changes", changes.join("\n"));
    put("callbacks", callbacks.len().to_string());
    for (i, cb) in callbacks.iter().enumerate() {
        let state = cb.state();
        for (key, value) in state.values {
            extra.meta.insert(format!("callbacks.{i}.{key}"), format!("{value:?}"));
        }
        for (key, values) in state.arrays {
            extra.arrays.insert(format!("callbacks.{i}.{key}"), values);
        }
    }
    save_checkpoint_with(&model.net, &*model.optimizer, &extra, path)
}

/// Loads a checkpoint written by `fit` into `model`, the random stream, the
/// training loader's order, `callbacks` and `history`; returns the epochs already
/// done. On error, the model, its optimizer and the random stream are unchanged.
pub(crate) fn restore<M: Module>(
    model: &mut Model<M>,
    path: &Path,
    train: &mut DataLoader,
    callbacks: &mut [Box<dyn Callback>],
    history: &mut History,
) -> Result<usize> {
    let checkpoint = read_checkpoint(&model.net, &*model.optimizer, path)?;
    let fit = &checkpoint.extra;
    let problem = |problems: Vec<String>| Error::Load {
        path: path.into(),
        problems,
    };
    let meta = |key: &str| {
        fit.meta.get(key).map(String::as_str).ok_or_else(|| {
            problem(vec![format!(
                "it holds no training state ({key:?} is missing): it was written by save_checkpoint, not by fit; load it with io::load_checkpoint"
            )])
        })
    };
    let parse_err = |key: &str, text: &str| problem(vec![format!("fit.{key}: {text:?} is malformed")]);
    let count = |key: &str| -> Result<u64> {
        let text = meta(key)?;
        text.parse().map_err(|_| parse_err(key, text))
    };
    let epochs = count("epochs")? as usize;
    let loader_epoch = count("loader_epoch")?;
    let shuffle = match meta("shuffle")? {
        "none" => None,
        s => Some(s.parse().map_err(|_| parse_err("shuffle", s))?),
    };
    let lr = parse_numbers(meta("lr")?).ok_or_else(|| parse_err("lr", meta("lr").unwrap_or("")))?;
    let mut logs = std::collections::BTreeMap::new();
    for (key, text) in &fit.meta {
        if let Some(name) = key.strip_prefix("history.") {
            logs.insert(
                name.to_string(),
                parse_numbers(text).ok_or_else(|| parse_err(key, text))?,
            );
        }
    }
    let lr_changes = (meta("lr_changes")?.split('\n').filter(|l| !l.is_empty()))
        .map(|line| parse_change(line).ok_or_else(|| parse_err("lr_changes", line)))
        .collect::<Result<Vec<_>>>()?;
    let saved = count("callbacks")? as usize;
    if saved != callbacks.len() {
        return Err(problem(vec![format!(
            "it was written by a fit with {saved} callbacks, this fit has {}; give the same callbacks in the same order",
            callbacks.len()
        )]));
    }
    for (i, cb) in callbacks.iter_mut().enumerate() {
        let prefix = format!("callbacks.{i}.");
        let mut state = CallbackState::default();
        for (key, text) in &fit.meta {
            if let Some(name) = key.strip_prefix(&prefix) {
                let value = text.parse().map_err(|_| parse_err(key, text))?;
                state.values.insert(name.to_string(), value);
            }
        }
        for (key, values) in &fit.arrays {
            if let Some(name) = key.strip_prefix(&prefix) {
                state.arrays.insert(name.to_string(), values.clone());
            }
        }
        cb.load_state(&state)
            .map_err(|e| problem(vec![format!("callback {i}: {e}")]))?;
    }
    checkpoint.apply(model.optimizer.as_mut())?;
    train.set_order_state((shuffle, loader_epoch));
    history.history = logs;
    history.lr = lr;
    history.lr_changes = lr_changes;
    history.meta.push((
        "resumed from".into(),
        format!("{} after epoch {epochs}", path.display()),
    ));
    Ok(epochs)
}

/// Numbers as text that reads back to the same bits.
fn numbers(values: &[f64]) -> String {
    values.iter().map(|v| format!("{v:?}")).collect::<Vec<_>>().join(",")
}

fn parse_numbers(text: &str) -> Option<Vec<f64>> {
    text.split(',')
        .filter(|t| !t.is_empty())
        .map(|t| t.parse().ok())
        .collect()
}

/// `epoch \t from \t to \t reason` (the reason escaped by [`escape`]).
fn parse_change(line: &str) -> Option<LrChange> {
    let mut fields = line.splitn(4, '\t');
    Some(LrChange {
        epoch: fields.next()?.parse().ok()?,
        from: fields.next()?.parse().ok()?,
        to: fields.next()?.parse().ok()?,
        reason: unescape(fields.next()?),
    })
}

/// Keeps tabs and newlines out of a field.
fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\t', "\\t").replace('\n', "\\n")
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('t') => out.push('\t'),
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => {}
            },
            (c, false) => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_reasons_read_back_unchanged() {
        let reason = "a\tb\nc\\d \\t";
        assert_eq!(unescape(&escape(reason)), reason);
        assert!(!escape(reason).contains(['\t', '\n']));
    }
}
