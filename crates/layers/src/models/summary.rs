//! `summary`: Keras' table of layers, output shapes and parameter counts.

use std::fmt::Write;

use rime_tensor::{Element, PartialShape};

use super::{Model, Sequential};
use crate::Layer;
use crate::layer::LayerRef;

/// Keras' rendering of a shape with an unknown batch: `(None, 64)`; `?`
/// for a layer whose shapes are not known (a model never built).
fn shape_text(s: Option<&PartialShape>) -> String {
    match s {
        None => "?".into(),
        Some(s) => s.to_string(),
    }
}

/// `50240` → `50,240`.
fn grouped(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn bytes_text(n: usize) -> String {
    let b = n as f64;
    if b < 1024.0 {
        format!("{b:.2} B")
    } else if b < 1024.0 * 1024.0 {
        format!("{:.2} KB", b / 1024.0)
    } else if b < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} MB", b / (1024.0 * 1024.0))
    } else {
        format!("{:.2} GB", b / (1024.0 * 1024.0 * 1024.0))
    }
}

/// The rows of a model: (layer, output shape if known).
fn rows<T: Element>(model: &dyn Layer<T>) -> Vec<(LayerRef<T>, Option<PartialShape>)> {
    let any: &dyn std::any::Any = model;
    if let Some(inner) = any.downcast_ref::<LayerRef<T>>() {
        return rows(&**inner);
    }
    if let Some(m) = any.downcast_ref::<std::sync::Arc<Model<T>>>() {
        return rows(&**m);
    }
    if let Some(s) = any.downcast_ref::<std::sync::Arc<Sequential<T>>>() {
        return rows(&**s);
    }
    if let Some(m) = any.downcast_ref::<Model<T>>() {
        return m
            .node_rows()
            .into_iter()
            .map(|(l, s)| (l, Some(s)))
            .collect();
    }
    if let Some(s) = any.downcast_ref::<Sequential<T>>() {
        let shapes = s.output_shapes().ok().flatten();
        return s
            .layers()
            .into_iter()
            .enumerate()
            .map(|(i, l)| {
                let shape = shapes.as_ref().map(|v| v[i].clone());
                (l, shape)
            })
            .collect();
    }
    model.sublayers().into_iter().map(|l| (l, None)).collect()
}

/// The Keras-style summary table of a model (or any layer with
/// sublayers): each layer's name and class, output shape and parameter
/// count, then total, trainable and non-trainable parameters. Elements
/// frozen by masks inside trainable weights are counted on a line of
/// their own.
///
/// ```
/// use rime_layers::{models::summary, Dense, Sequential};
/// let model = Sequential::<f32>::new().add(Dense::new(64)).add(Dense::new(10)).with_input_shape([784])?;
/// let text = summary(&model);
/// assert!(text.contains("dense") && text.contains("(None, 64)") && text.contains("50,240"));
/// assert!(text.contains("Total params: 50,890 (198.79 KB)"));
/// # Ok::<(), rime_layers::Error>(())
/// ```
pub fn summary<T: Element>(model: &dyn Layer<T>) -> String {
    let widths = [33usize, 24, 15];
    let mut out = String::new();
    let _ = writeln!(out, "Model: \"{}\"", model.name());
    let line = |l: char, m: char, r: char, fill: char| {
        let mut s = String::new();
        s.push(l);
        for (i, w) in widths.iter().enumerate() {
            s.extend(std::iter::repeat_n(fill, *w));
            s.push(if i + 1 == widths.len() { r } else { m });
        }
        s
    };
    let row = |edge: char, cells: [&str; 3]| {
        let mut s = String::new();
        s.push(edge);
        for (i, (w, c)) in widths.iter().zip(cells).enumerate() {
            let c: String = c.chars().take(w - 2).collect();
            if i == 2 {
                let _ = write!(s, " {c:>width$} ", width = w - 2);
            } else {
                let _ = write!(s, " {c:<width$} ", width = w - 2);
            }
            s.push(edge);
        }
        s
    };
    let _ = writeln!(out, "{}", line('┏', '┳', '┓', '━'));
    let _ = writeln!(
        out,
        "{}",
        row('┃', ["Layer (type)", "Output Shape", "Param #"])
    );
    let _ = writeln!(out, "{}", line('┡', '╇', '┩', '━'));
    let rows = rows(model);
    for (i, (l, shape)) in rows.iter().enumerate() {
        let name = format!("{} ({})", l.name(), l.class_name());
        let _ = writeln!(
            out,
            "{}",
            row(
                '│',
                [
                    &name,
                    &shape_text(shape.as_ref()),
                    &grouped(l.count_params())
                ]
            )
        );
        if i + 1 < rows.len() {
            let _ = writeln!(out, "{}", line('├', '┼', '┤', '─'));
        }
    }
    let _ = writeln!(out, "{}", line('└', '┴', '┘', '─'));
    let size = std::mem::size_of::<T>();
    let count = |vs: &[rime_tape::Variable<T>]| vs.iter().map(|v| v.len()).sum::<usize>();
    let total = model.count_params();
    let trainable_vars = model.trainable_weights();
    let trainable = count(&trainable_vars);
    let non_trainable = count(&model.non_trainable_weights());
    let _ = writeln!(
        out,
        " Total params: {} ({})",
        grouped(total),
        bytes_text(total * size)
    );
    let _ = writeln!(
        out,
        " Trainable params: {} ({})",
        grouped(trainable),
        bytes_text(trainable * size)
    );
    let _ = writeln!(
        out,
        " Non-trainable params: {} ({})",
        grouped(non_trainable),
        bytes_text(non_trainable * size)
    );
    let masked: usize = trainable_vars
        .iter()
        .filter_map(|v| v.mask().map(|m| v.len() - m.trainable_count()))
        .sum();
    if masked > 0 {
        let _ = writeln!(
            out,
            " Frozen by masks (within trainable params): {}",
            grouped(masked)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_formats() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1,000");
        assert_eq!(grouped(1234567), "1,234,567");
        assert_eq!(bytes_text(0), "0.00 B");
        assert_eq!(bytes_text(203_560), "198.79 KB");
        assert_eq!(shape_text(Some(&PartialShape::batched([64]))), "(None, 64)");
        assert_eq!(shape_text(Some(&PartialShape::from([None]))), "(None,)");
        assert_eq!(shape_text(None), "?");
    }
}
