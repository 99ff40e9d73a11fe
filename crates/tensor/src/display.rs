//! `Display` and `Debug` for tensors, in NumPy's layout: values nested by
//! axis with one row per line and aligned columns, then the shape and
//! dtype (scientific notation by NumPy's rule, exponents as `e+05`); large tensors (more than 1000 elements, NumPy's threshold) show
//! the first and last 3 entries of each long axis around `...`.

use std::fmt;

use crate::{Element, IntElement, Scalar, Tensor};

/// NumPy's `threshold`: above this many elements the output is summarized.
const THRESHOLD: usize = 1000;
/// NumPy's `edgeitems`: entries shown at each end of a summarized axis.
const EDGE: usize = 3;
/// NumPy's `linewidth`: rows longer than this wrap.
const LINE_WIDTH: usize = 75;
/// At most this many decimals by default (NumPy's `precision`).
const PRECISION: usize = 8;
const PREFIX: &str = "tensor(";

/// How every shown number is written, decided once over all of them so
/// that columns line up.
#[derive(Clone, Copy)]
enum Style {
    /// `{}` (shortest round trip) rounded to at most `PRECISION` decimals;
    /// integral values as `3.`.
    Shortest,
    /// A fixed number of decimals (the formatter's precision, `{:.2}`).
    Fixed(usize),
    /// Scientific, for very large or very small magnitudes.
    Scientific(usize),
}

fn style_for<T: Element>(shown: &[T], precision: Option<usize>) -> Style {
    let (mut max, mut min_nonzero) = (0.0f64, f64::INFINITY);
    for v in shown {
        let a = v.to_f64().unwrap_or(f64::NAN).abs();
        if a.is_finite() {
            max = max.max(a);
            if a > 0.0 {
                min_nonzero = min_nonzero.min(a);
            }
        }
    }
    // NumPy's rule
    let any_nonzero = min_nonzero.is_finite();
    if max >= 1e8 || (any_nonzero && (min_nonzero < 1e-4 || max / min_nonzero > 1e3)) {
        // NumPy's default: as many mantissa digits as the most precise value
        // needs (shortest round trip), at most PRECISION
        let digits = |v: &T| {
            let s = format!("{:e}", v.to_f64().unwrap_or(0.0));
            let mantissa = s.split_once('e').map_or(s.as_str(), |(m, _)| m);
            mantissa.split_once('.').map_or(0, |(_, f)| f.len())
        };
        let finite = shown.iter().filter(|v| v.is_finite());
        Style::Scientific(
            precision.unwrap_or_else(|| finite.map(digits).max().unwrap_or(0).min(PRECISION)),
        )
    } else if let Some(p) = precision {
        Style::Fixed(p)
    } else {
        Style::Shortest
    }
}

fn format_value<T: Element>(v: T, style: Style) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > T::zero() { "inf" } else { "-inf" }.into();
    }
    match style {
        Style::Fixed(p) => format!("{v:.p$}"),
        Style::Scientific(p) => {
            // NumPy's exponent: signed, at least two digits (1.5e+03)
            let s = format!("{:.p$e}", v.to_f64().unwrap_or(f64::NAN));
            match s.split_once('e') {
                Some((mantissa, exp)) => {
                    let exp: i32 = exp.parse().unwrap_or(0);
                    format!("{mantissa}e{exp:+03}")
                }
                None => s,
            }
        }
        Style::Shortest => {
            let mut s = format!("{v}");
            if let Some(dot) = s.find('.') {
                if s.len() - dot - 1 > PRECISION {
                    s = format!("{v:.PRECISION$}");
                    let trimmed = s.trim_end_matches('0').len();
                    s.truncate(trimmed);
                }
            } else {
                s.push('.');
            }
            s
        }
    }
}

/// The indices (along one axis of length `n`) that are shown.
fn shown_indices(n: usize, summarize: bool) -> Vec<Option<usize>> {
    if summarize && n > 2 * EDGE {
        (0..EDGE)
            .map(Some)
            .chain(std::iter::once(None))
            .chain((n - EDGE..n).map(Some))
            .collect()
    } else {
        (0..n).map(Some).collect()
    }
}

/// Calls `f` with every shown element, in order.
fn for_each_shown<T: Copy>(data: &[T], dims: &[usize], summarize: bool, f: &mut impl FnMut(T)) {
    let Some((&n, rest)) = dims.split_first() else {
        return f(data[0]);
    };
    let inner: usize = rest.iter().product();
    for i in shown_indices(n, summarize).into_iter().flatten() {
        for_each_shown(&data[i * inner..(i + 1) * inner], rest, summarize, f);
    }
}

struct Layout {
    style: Style,
    /// Widths of the part before the `.` (or `e`) and of the rest.
    int_width: usize,
    frac_width: usize,
    summarize: bool,
}

impl Layout {
    fn cell<T: Element>(&self, v: T) -> String {
        let s = format_value(v, self.style);
        if !v.is_finite() {
            // nan and inf align right, as NumPy's do
            return format!("{s:>w$}", w = self.int_width + self.frac_width);
        }
        let split = s.find(['.', 'e']).unwrap_or(s.len());
        let (int, frac) = s.split_at(split);
        format!(
            "{int:>iw$}{frac:<fw$}",
            iw = self.int_width,
            fw = self.frac_width
        )
    }

    /// Writes the nested lists. `indent` is the column of this level's `[`;
    /// `col` tracks the current column for wrapping long rows.
    fn write<T: Copy>(
        &self,
        out: &mut String,
        data: &[T],
        dims: &[usize],
        indent: usize,
        cell: &dyn Fn(T) -> String,
    ) {
        let Some((&n, rest)) = dims.split_first() else {
            out.push_str(&cell(data[0]));
            return;
        };
        let inner: usize = rest.iter().product();
        out.push('[');
        let shown = shown_indices(n, self.summarize);
        if rest.is_empty() {
            // one row of numbers, wrapped at LINE_WIDTH
            let mut col = indent + 1;
            for (k, i) in shown.iter().enumerate() {
                let cell = match i {
                    Some(i) => cell(data[*i]),
                    None => "...".to_string(),
                };
                if k > 0 {
                    out.push(',');
                    col += 1;
                    if col + 1 + cell.len() + 1 > LINE_WIDTH {
                        out.push('\n');
                        out.push_str(&" ".repeat(indent + 1));
                        col = indent + 1;
                    } else {
                        out.push(' ');
                        col += 1;
                    }
                }
                out.push_str(&cell);
                col += cell.len();
            }
        } else {
            // sub-arrays on their own lines; rank-3 and up blocks apart by
            // blank lines, as NumPy does
            let blank_lines = rest.len() - 1;
            for (k, i) in shown.iter().enumerate() {
                if k > 0 {
                    out.push(',');
                    out.push_str(&"\n".repeat(1 + blank_lines));
                    out.push_str(&" ".repeat(indent + 1));
                }
                match i {
                    Some(i) => self.write(
                        out,
                        &data[i * inner..(i + 1) * inner],
                        rest,
                        indent + 1,
                        cell,
                    ),
                    None => out.push_str("..."),
                }
            }
        }
        out.push(']');
    }
}

/// NumPy's layout: `tensor([[1. , 2.5],\n        [3. , 4. ]], shape=[2, 2], dtype=f32)`.
/// The formatter's precision (`{:.2}`) fixes the decimals. Tensors of more
/// than 1000 elements show the first and last 3 entries of long axes.
///
/// ```
/// use rime_tensor::Tensor;
/// let t = Tensor::from_vec(vec![1.0f32, 2.5, -3.0, 4.0], [2, 2])?;
/// assert_eq!(t.to_string(), "tensor([[ 1. ,  2.5],\n        [-3. ,  4. ]], shape=[2, 2], dtype=f32)");
/// assert_eq!(format!("{t:.2}"), "tensor([[ 1.00,  2.50],\n        [-3.00,  4.00]], shape=[2, 2], dtype=f32)");
/// let big = Tensor::<f64>::arange(0.0, 2000.0, 1.0)?.div_scalar(8.0).add_scalar(1.0);
/// assert_eq!(big.to_string(), "tensor([  1.   ,   1.125,   1.25 , ..., 250.625, 250.75 , 250.875], shape=[2000], dtype=f64)");
/// # Ok::<(), rime_tensor::Error>(())
/// ```
///
/// Integer tensors print their values right-aligned:
///
/// ```
/// use rime_tensor::Tensor;
/// let ids = Tensor::from_vec(vec![3i64, -1, 10, 7], [2, 2])?;
/// assert_eq!(ids.to_string(), "tensor([[ 3, -1],\n        [10,  7]], shape=[2, 2], dtype=i64)");
/// # Ok::<(), rime_tensor::Error>(())
/// ```
impl<T: Scalar> fmt::Display for Tensor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        T::fmt_tensor(self, f)
    }
}

/// `Display` of an integer tensor: every shown value right-aligned to the
/// widest.
pub(crate) fn fmt_int<T: IntElement>(t: &Tensor<T>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let suffix = format!(", shape={}, dtype={})", t.shape(), T::DTYPE);
    if t.is_empty() {
        return write!(f, "{PREFIX}[]{suffix}");
    }
    let summarize = t.len() > THRESHOLD;
    let mut width = 0;
    for_each_shown(t.as_slice(), t.dims(), summarize, &mut |v| {
        width = width.max(v.to_string().len())
    });
    let layout = Layout {
        style: Style::Shortest,
        int_width: width,
        frac_width: 0,
        summarize,
    };
    let mut out = String::from(PREFIX);
    let cell = |v: T| format!("{v:>width$}");
    layout.write(&mut out, t.as_slice(), t.dims(), PREFIX.len(), &cell);
    out.push_str(&suffix);
    f.write_str(&out)
}

/// `Display` of a float tensor (NumPy's float layout).
pub(crate) fn fmt_float<T: Element>(t: &Tensor<T>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    {
        let this = t;
        let dims = this.dims();
        let suffix = format!(", shape={}, dtype={})", this.shape(), T::DTYPE);
        if this.is_empty() {
            return write!(f, "{PREFIX}[]{suffix}");
        }
        let summarize = this.len() > THRESHOLD;
        let mut shown = Vec::new();
        for_each_shown(this.as_slice(), dims, summarize, &mut |v| shown.push(v));
        let style = style_for(&shown, f.precision());
        let (mut int_width, mut frac_width, mut special_width) = (0, 0, 0);
        for v in &shown {
            let s = format_value(*v, style);
            if !v.is_finite() {
                special_width = special_width.max(s.len());
                continue;
            }
            let split = s.find(['.', 'e']).unwrap_or(s.len());
            int_width = int_width.max(split);
            frac_width = frac_width.max(s.len() - split);
        }
        int_width += special_width.saturating_sub(int_width + frac_width);
        let layout = Layout {
            style,
            int_width,
            frac_width,
            summarize,
        };
        let mut out = String::from(PREFIX);
        layout.write(&mut out, this.as_slice(), dims, PREFIX.len(), &|v| {
            layout.cell(v)
        });
        out.push_str(&suffix);
        f.write_str(&out)
    }
}

/// The same as `Display`.
impl<T: Scalar> fmt::Debug for Tensor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
