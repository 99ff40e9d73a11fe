//! Numeric CSV files (through the `csv` crate), plain or gzip-compressed.

use std::ops::Range;
use std::path::Path;

use rime_tensor::{Element, Tensor};

use super::{data_err, open_maybe_gz};
use crate::Result;

/// A numeric table read by [`read_csv`]: values row-major as `f64`.
#[derive(Clone, Debug, PartialEq)]
pub struct CsvTable {
    /// Column names (empty when the file has no header row).
    pub headers: Vec<String>,
    /// The values, `rows × cols`, row-major.
    pub values: Vec<f64>,
    /// Number of data rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
}

/// Reads a CSV file of numbers (`.gz` files are decompressed). With
/// `has_headers` the first row names the columns. Every row must have the
/// same number of fields and every field must parse as a number; the error
/// names the file, the row and the column.
///
/// ```
/// use rime_layers::data::read_csv;
/// let path = std::env::temp_dir().join("rime_doc_table.csv");
/// std::fs::write(&path, "a,b,label\n0.5,1,2\n1.5,2,0\n")?;
/// let table = read_csv(&path, true)?;
/// assert_eq!(table.headers, ["a", "b", "label"]);
/// let x = table.columns::<f32>(0..2)?;   // features [2, 2]
/// let y = table.int_column(2)?;          // class indices [2], i64
/// assert_eq!(x.to_vec(), vec![0.5, 1.0, 1.5, 2.0]);
/// assert_eq!(y.to_vec(), vec![2, 0]);
/// assert!(table.int_column(0).is_err()); // 0.5 is not an integer
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn read_csv(path: impl AsRef<Path>, has_headers: bool) -> Result<CsvTable> {
    let path = path.as_ref();
    let what = || format!("CSV file `{}`", path.display());
    let mut reader = ::csv::ReaderBuilder::new()
        .has_headers(has_headers)
        .trim(::csv::Trim::All)
        .from_reader(open_maybe_gz(path)?);
    let headers = if has_headers {
        let h = reader.headers().map_err(|e| data_err(what(), e))?;
        h.iter().map(str::to_string).collect()
    } else {
        Vec::new()
    };
    let (mut values, mut rows, mut cols) = (Vec::new(), 0usize, None);
    for record in reader.records() {
        let record = record.map_err(|e| data_err(what(), e))?;
        let n = *cols.get_or_insert(record.len());
        if record.len() != n {
            return Err(data_err(
                what(),
                format!(
                    "row {} has {} fields, the first row has {n}",
                    rows + 1,
                    record.len()
                ),
            ));
        }
        for (j, field) in record.iter().enumerate() {
            let v: f64 = field.parse().map_err(|_| {
                data_err(
                    what(),
                    format!(
                        "row {}, column {}: `{field}` is not a number",
                        rows + 1,
                        j + 1
                    ),
                )
            })?;
            values.push(v);
        }
        rows += 1;
    }
    Ok(CsvTable {
        headers,
        values,
        rows,
        cols: cols.unwrap_or(0),
    })
}

impl CsvTable {
    /// Columns `range` as a `[rows, range.len()]` tensor.
    pub fn columns<T: Element>(&self, range: Range<usize>) -> Result<Tensor<T>> {
        if range.start > range.end || range.end > self.cols {
            return Err(data_err(
                "CSV table",
                format!("columns {range:?} out of range for {} columns", self.cols),
            ));
        }
        let width = range.len();
        let mut out = Vec::with_capacity(self.rows * width);
        for r in 0..self.rows {
            let row = &self.values[r * self.cols..(r + 1) * self.cols];
            out.extend(row[range.clone()].iter().map(|&v| T::of(v)));
        }
        Ok(Tensor::from_vec(out, [self.rows, width])?)
    }

    /// Column `j` as a `[rows]` float tensor.
    pub fn column<T: Element>(&self, j: usize) -> Result<Tensor<T>> {
        let c = self.columns::<T>(j..j + 1)?;
        Ok(c.reshape([self.rows])?)
    }

    /// Column `j` as a `[rows]` integer tensor: class indices or ids, as
    /// the sparse losses and metrics and [`Embedding::lookup`] read them.
    /// Every value must be a whole number (exactly representable: at most
    /// 2^53 in magnitude); the error names the row and column.
    ///
    /// [`Embedding::lookup`]: crate::Embedding::lookup
    pub fn int_column(&self, j: usize) -> Result<Tensor<i64>> {
        if j >= self.cols {
            return Err(data_err(
                "CSV table",
                format!("column {j} out of range for {} columns", self.cols),
            ));
        }
        const EXACT: f64 = (1u64 << 53) as f64;
        let mut out = Vec::with_capacity(self.rows);
        for r in 0..self.rows {
            let v = self.values[r * self.cols + j];
            if !(v.fract() == 0.0 && v.abs() <= EXACT) {
                return Err(data_err(
                    "CSV table",
                    format!(
                        "row {}, column {}: {v} is not an integer label",
                        r + 1,
                        j + 1
                    ),
                ));
            }
            out.push(v as i64);
        }
        Ok(Tensor::vector(out))
    }
}
