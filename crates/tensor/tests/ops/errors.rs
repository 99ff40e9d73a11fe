//! A bad-input test for every fallible op: the error variant, the op it
//! names, and the shapes or arguments in its message.

#![allow(clippy::single_range_in_vec_init, clippy::reversed_empty_ranges)]

use rime_tensor::{Error, Result, Shape, Tensor, broadcast_shapes, seeded_rng};

/// Which variant an error is.
fn kind(e: &Error) -> &'static str {
    match e {
        Error::Broadcast { .. } => "Broadcast",
        Error::ShapeMismatch { .. } => "ShapeMismatch",
        Error::DataLength { .. } => "DataLength",
        Error::Reshape { .. } => "Reshape",
        Error::InvalidAxis { .. } => "InvalidAxis",
        Error::IndexOutOfBounds { .. } => "IndexOutOfBounds",
        Error::Rank { .. } => "Rank",
        Error::InvalidArgument { .. } => "InvalidArgument",
        Error::ShapeOverflow { .. } => "ShapeOverflow",
        Error::Alloc { .. } => "Alloc",
        _ => "unknown",
    }
}

/// Asserts `r` failed with variant `want` from op `op`, and that the message
/// starts with the op and mentions each of `mentions`.
#[track_caller]
fn fails<V: std::fmt::Debug>(r: Result<V>, want: &str, op: &str, mentions: &[&str]) {
    let e = match r {
        Ok(v) => panic!("{op}: expected a {want} error, got Ok({v:?})"),
        Err(e) => e,
    };
    assert_eq!(kind(&e), want, "{op}: {e}");
    assert_eq!(e.op(), op, "{e}");
    let msg = e.to_string();
    assert!(msg.starts_with(&format!("{op}: ")), "{msg}");
    for m in mentions {
        assert!(
            msg.contains(m),
            "{op}: message {msg:?} does not mention {m:?}"
        );
    }
}

fn x23() -> Tensor {
    Tensor::zeros([2, 3]).unwrap()
}

#[test]
fn constructors() {
    fails(
        Tensor::from_vec(vec![1.0f32; 5], [2, 3]),
        "DataLength",
        "from_vec",
        &["5", "[2, 3]", "6"],
    );
    fails(
        Tensor::from_slice(&[1.0f64; 2], [3]),
        "DataLength",
        "from_slice",
        &["2", "[3]"],
    );
    fails(
        Tensor::from_vec(Vec::<f32>::new(), [usize::MAX, 2, 0]),
        "ShapeOverflow",
        "from_vec",
        &[],
    );
    fails(
        Tensor::from_vec(vec![0.0f32; 2], [usize::MAX, 2]),
        "ShapeOverflow",
        "from_vec",
        &["[18446744073709551615, 2]", "isize::MAX bytes"],
    );
    fails(
        Tensor::arange(0.0f32, 1.0, 0.0),
        "InvalidArgument",
        "arange",
        &["step"],
    );
    fails(
        Tensor::arange(0.0f64, f64::INFINITY, 1.0),
        "InvalidArgument",
        "arange",
        &["inf"],
    );
    fails(
        Tensor::arange(f64::NAN, 1.0, 1.0),
        "InvalidArgument",
        "arange",
        &["NaN"],
    );
    fails(
        Tensor::arange(0.0f64, 1e300, 1e-300),
        "InvalidArgument",
        "arange",
        &["too many"],
    );
    fails(
        Tensor::<f32>::zeros([2]).unwrap().to_scalar(),
        "InvalidArgument",
        "to_scalar",
        &["[2]"],
    );
    fails(
        Tensor::<f32>::zeros([0]).unwrap().to_scalar(),
        "InvalidArgument",
        "to_scalar",
        &["[0]"],
    );
    fails(x23().get(&[0]), "InvalidArgument", "get", &["[2, 3]"]);
    fails(
        x23().get(&[1, 3]),
        "IndexOutOfBounds",
        "get",
        &["3", "axis 1", "size 3"],
    );
    let r = &mut seeded_rng(0);
    fails(
        Tensor::<f32>::rand_uniform([2], 1.0, 1.0, r),
        "InvalidArgument",
        "rand_uniform",
        &["1"],
    );
    fails(
        Tensor::<f32>::rand_uniform([2], 0.0, f64::NAN, r),
        "InvalidArgument",
        "rand_uniform",
        &[],
    );
    fails(
        Tensor::<f32>::rand_normal([2], 0.0, -1.0, r),
        "InvalidArgument",
        "rand_normal",
        &["-1"],
    );
    fails(
        Tensor::<f32>::rand_normal([2], f64::INFINITY, 1.0, r),
        "InvalidArgument",
        "rand_normal",
        &["inf"],
    );
    fails(
        Tensor::<f64>::rand_truncated_normal([2], 0.0, f64::NAN, r),
        "InvalidArgument",
        "rand_truncated_normal",
        &["NaN"],
    );
}

#[test]
fn shapes_and_axes() {
    fails(
        broadcast_shapes("add", &Shape::from([2, 3]), &Shape::from([4])),
        "Broadcast",
        "add",
        &["[2, 3]", "[4]"],
    );
    let s = Shape::from([2, 3]);
    fails(s.axis("sum", 2), "InvalidAxis", "sum", &["2", "rank 2"]);
    fails(s.axis("sum", -3), "InvalidAxis", "sum", &["-3"]);
    fails(
        s.axes("sum", &[1, -1]),
        "InvalidArgument",
        "sum",
        &["twice"],
    );
}

#[test]
fn binary_ops_and_select() {
    let (a, b) = (x23(), Tensor::zeros([2]).unwrap());
    type Bin = fn(&Tensor, &Tensor) -> Result<Tensor>;
    let ops: [(&str, Bin); 13] = [
        ("add", Tensor::add),
        ("sub", Tensor::sub),
        ("mul", Tensor::mul),
        ("div", Tensor::div),
        ("pow", Tensor::pow),
        ("maximum", Tensor::maximum),
        ("minimum", Tensor::minimum),
        ("eq", Tensor::eq),
        ("ne", Tensor::ne),
        ("lt", Tensor::lt),
        ("le", Tensor::le),
        ("gt", Tensor::gt),
        ("ge", Tensor::ge),
    ];
    for (name, op) in ops {
        fails(op(&a, &b), "Broadcast", name, &["[2, 3]", "[2]"]);
        // an empty axis broadcasts only with 1
        fails(
            op(&Tensor::zeros([0]).unwrap(), &Tensor::zeros([2]).unwrap()),
            "Broadcast",
            name,
            &["[0]", "[2]"],
        );
    }
    fails(Tensor::select(&a, &b, &a), "Broadcast", "select", &["[2]"]);
    fails(
        Tensor::select(&a, &a, &Tensor::zeros([3, 1]).unwrap()),
        "Broadcast",
        "select",
        &["[3, 1]"],
    );
}

#[test]
#[should_panic(expected = "mul: shapes [2, 3] and [2] cannot be broadcast together")]
fn operators_panic_with_the_same_message() {
    let _ = &x23() * &Tensor::zeros([2]).unwrap();
}

#[test]
fn unary_arguments() {
    fails(
        x23().clamp(1.0, 0.0),
        "InvalidArgument",
        "clamp",
        &["min 1", "max 0"],
    );
    fails(
        x23().clamp(f32::NAN, 0.0),
        "InvalidArgument",
        "clamp",
        &["NaN"],
    );
    fails(
        x23().clamp(0.0, f32::NAN),
        "InvalidArgument",
        "clamp",
        &["NaN"],
    );
}

#[test]
fn reductions() {
    let x = x23();
    type Red = fn(&Tensor, &[isize], bool) -> Result<Tensor>;
    let ops: [(&str, Red); 6] = [
        ("sum", Tensor::sum),
        ("mean", Tensor::mean),
        ("max", Tensor::max),
        ("min", Tensor::min),
        ("var", Tensor::var),
        ("logsumexp", Tensor::logsumexp),
    ];
    for (name, op) in ops {
        fails(op(&x, &[2], false), "InvalidAxis", name, &["2", "rank 2"]);
        fails(op(&x, &[-3], true), "InvalidAxis", name, &["-3"]);
        fails(
            op(&x, &[0, -2], false),
            "InvalidArgument",
            name,
            &["twice", "[2, 3]"],
        );
        fails(
            op(&Tensor::scalar(1.0), &[0], false),
            "InvalidAxis",
            name,
            &["rank 0"],
        );
    }
    let e = Tensor::<f32>::zeros([2, 0]).unwrap();
    fails(
        e.max(&[1], false),
        "InvalidArgument",
        "max",
        &["empty", "[2, 0]"],
    );
    fails(e.min(&[], true), "InvalidArgument", "min", &["empty"]);
    fails(x.argmax(2, false), "InvalidAxis", "argmax", &["2"]);
    fails(x.argmin(-3, false), "InvalidAxis", "argmin", &["-3"]);
    fails(
        e.argmax(1, false),
        "InvalidArgument",
        "argmax",
        &["empty", "[2, 0]"],
    );
    fails(e.argmin(1, true), "InvalidArgument", "argmin", &["empty"]);
    fails(x.argmax_indices(5), "InvalidAxis", "argmax", &["5"]);
    fails(
        Tensor::<f32>::scalar(1.0).argmax(0, false),
        "InvalidAxis",
        "argmax",
        &["rank 0"],
    );
    fails(x.sum_to(&Shape::from([4])), "Broadcast", "sum_to", &["[4]"]);
    fails(
        x.sum_to(&Shape::from([2, 2, 3])),
        "ShapeMismatch",
        "sum_to",
        &["[2, 2, 3]"],
    );
    fails(
        Tensor::<f32>::zeros([3])
            .unwrap()
            .sum_to(&Shape::from([2, 1])),
        "ShapeMismatch",
        "sum_to",
        &["[2, 1]"],
    );
}

#[test]
fn softmax_family() {
    let x = x23();
    fails(x.softmax(2), "InvalidAxis", "softmax", &["2"]);
    fails(x.log_softmax(-3), "InvalidAxis", "log_softmax", &["-3"]);
    fails(
        Tensor::<f32>::scalar(1.0).softmax(0),
        "InvalidAxis",
        "softmax",
        &["rank 0"],
    );
    const XE: &str = "sparse_softmax_cross_entropy";
    fails(
        x.sparse_softmax_cross_entropy(&[0]),
        "InvalidArgument",
        XE,
        &["1 labels", "[2, 3]"],
    );
    fails(
        x.sparse_softmax_cross_entropy(&[0, 3]),
        "IndexOutOfBounds",
        XE,
        &["3", "size 3"],
    );
    fails(
        Tensor::<f32>::scalar(1.0).sparse_softmax_cross_entropy(&[0]),
        "Rank",
        XE,
        &["[]"],
    );
    fails(
        x.softmax_cross_entropy(&Tensor::zeros([3, 2]).unwrap()),
        "ShapeMismatch",
        "softmax_cross_entropy",
        &["[2, 3]", "[3, 2]"],
    );
    fails(
        Tensor::<f32>::scalar(1.0).softmax_cross_entropy(&Tensor::scalar(1.0)),
        "Rank",
        "softmax_cross_entropy",
        &["[]"],
    );
}

#[test]
fn layout() {
    let x = x23();
    fails(x.reshape([4]), "Reshape", "reshape", &["[2, 3]", "[4]"]);
    fails(
        x.reshape([usize::MAX, 3]),
        "ShapeOverflow",
        "reshape",
        &["[18446744073709551615, 3]"],
    );
    fails(x.flatten_from(3), "InvalidAxis", "flatten_from", &["3"]);
    fails(x.unsqueeze(3), "InvalidAxis", "unsqueeze", &["3"]);
    fails(x.unsqueeze(-4), "InvalidAxis", "unsqueeze", &["-4"]);
    fails(x.squeeze(&[0]), "InvalidArgument", "squeeze", &["size 2"]);
    fails(x.squeeze(&[2]), "InvalidAxis", "squeeze", &["2"]);
    fails(
        x.permute(&[0]),
        "InvalidArgument",
        "permute",
        &["[0]", "[2, 3]"],
    );
    fails(
        x.permute(&[1, 1]),
        "InvalidArgument",
        "permute",
        &["[1, 1]"],
    );
    fails(
        x.permute(&[0, 2]),
        "InvalidArgument",
        "permute",
        &["[0, 2]"],
    );
    fails(x.transpose(0, 2), "InvalidAxis", "transpose", &["2"]);
    fails(
        Tensor::<f32>::zeros([3]).unwrap().t(),
        "Rank",
        "t",
        &["[3]"],
    );
    fails(
        x.broadcast_to([3, 3]),
        "Broadcast",
        "broadcast_to",
        &["[2, 3]", "[3, 3]"],
    );
    fails(x.broadcast_to([3]), "Broadcast", "broadcast_to", &["[3]"]);
    fails(
        x.broadcast_to([2, 1]),
        "Broadcast",
        "broadcast_to",
        &["[2, 1]"],
    );
    fails(
        Tensor::<f32>::concat(&[], 0),
        "InvalidArgument",
        "concat",
        &["at least one"],
    );
    fails(
        Tensor::concat(&[&x, &Tensor::zeros([3, 3]).unwrap()], 1),
        "ShapeMismatch",
        "concat",
        &["[3, 3]"],
    );
    fails(
        Tensor::concat(&[&x, &Tensor::zeros([2]).unwrap()], 0),
        "ShapeMismatch",
        "concat",
        &["[2]"],
    );
    fails(
        Tensor::concat(&[&x, &x], 2),
        "InvalidAxis",
        "concat",
        &["2"],
    );
    fails(
        Tensor::<f32>::stack(&[], 0),
        "InvalidArgument",
        "stack",
        &["at least one"],
    );
    fails(
        Tensor::stack(&[&x, &Tensor::zeros([3, 2]).unwrap()], 0),
        "ShapeMismatch",
        "stack",
        &["[3, 2]"],
    );
    fails(Tensor::stack(&[&x, &x], 3), "InvalidAxis", "stack", &["3"]);
    fails(
        x.split(&[1, 1], 1),
        "InvalidArgument",
        "split",
        &["[1, 1]", "[2, 3]"],
    );
    fails(
        x.split(&[usize::MAX, 4], 1),
        "InvalidArgument",
        "split",
        &[],
    );
    fails(x.split(&[2], 2), "InvalidAxis", "split", &["2"]);
    fails(
        x.slice(&[0..1, 2..4]),
        "InvalidArgument",
        "slice",
        &["2..4", "axis 1"],
    );
    fails(x.slice(&[1..0]), "InvalidArgument", "slice", &["1..0"]);
    fails(
        x.slice(&[0..1, 0..1, 0..1]),
        "InvalidArgument",
        "slice",
        &["3 ranges"],
    );
    fails(x.narrow(1, 2, 2), "InvalidArgument", "narrow", &["2"]);
    fails(x.narrow(1, usize::MAX, 2), "InvalidArgument", "narrow", &[]);
    fails(x.narrow(2, 0, 1), "InvalidAxis", "narrow", &["2"]);
    fails(x.pad(&[(0, 0); 3]), "InvalidArgument", "pad", &["3 widths"]);
    fails(
        x.pad(&[(usize::MAX, 1)]),
        "InvalidArgument",
        "pad",
        &["too large"],
    );
}

#[test]
fn gather_and_scatter() {
    let x = Tensor::<f32>::zeros([3, 2]).unwrap();
    fails(
        x.index_select(1, &[0, 2]),
        "IndexOutOfBounds",
        "index_select",
        &["2", "axis 1", "size 2"],
    );
    fails(
        x.index_select(2, &[0]),
        "InvalidAxis",
        "index_select",
        &["2"],
    );
    let ids = |v: Vec<i64>, shape: &[usize]| Tensor::from_vec(v, shape).unwrap();
    fails(
        x.gather(0, &ids(vec![0, -1], &[1, 2])),
        "IndexOutOfBounds",
        "gather",
        &["-1", "axis 0", "size 3"],
    );
    fails(
        x.gather(0, &ids(vec![3], &[1])),
        "IndexOutOfBounds",
        "gather",
        &["3"],
    );
    fails(
        x.gather(-3, &ids(vec![0], &[1])),
        "InvalidAxis",
        "gather",
        &["-3"],
    );
    fails(
        x.index_select(0, &ids(vec![0, 1], &[2, 1])),
        "ShapeMismatch",
        "index_select",
        &["[3, 2]", "[2, 1]", "rank 0 or 1"],
    );
    fails(
        x.add_scalar(1e10).to_dtype::<i32>(),
        "InvalidArgument",
        "to_dtype",
        &["10000000000", "[3, 2]", "i32"],
    );
    fails(
        x.scatter_add(0, &[0, 1], &Tensor::zeros([3, 2]).unwrap()),
        "ShapeMismatch",
        "scatter_add",
        &["[3, 2]", "[2, 2]"],
    );
    fails(
        x.scatter_add(0, &[5], &Tensor::zeros([1, 2]).unwrap()),
        "IndexOutOfBounds",
        "scatter_add",
        &["5"],
    );
    fails(
        x.scatter_add(2, &[0], &Tensor::zeros([1, 2]).unwrap()),
        "InvalidAxis",
        "scatter_add",
        &["2"],
    );
    fails(
        Tensor::<f32>::one_hot(&[1, 4], 3),
        "IndexOutOfBounds",
        "one_hot",
        &["4", "size 3"],
    );
}

#[test]
fn matmul() {
    let a = x23();
    fails(
        a.matmul(&a),
        "ShapeMismatch",
        "matmul",
        &["[2, 3]", "3 vs 2"],
    );
    fails(a.matmul(&Tensor::scalar(1.0)), "Rank", "matmul", &["[]"]);
    fails(Tensor::scalar(1.0).matmul(&a), "Rank", "matmul", &["[]"]);
    fails(
        a.matmul(&Tensor::zeros([2]).unwrap()),
        "ShapeMismatch",
        "matmul",
        &["3 vs 2"],
    );
    fails(
        Tensor::<f32>::zeros([2])
            .unwrap()
            .matmul(&Tensor::zeros([3]).unwrap()),
        "ShapeMismatch",
        "matmul",
        &[],
    );
    fails(
        Tensor::<f32>::zeros([2, 2, 3])
            .unwrap()
            .matmul(&Tensor::zeros([3, 3, 1]).unwrap()),
        "Broadcast",
        "matmul",
        &["[2, 2, 3]", "[3, 3, 1]"],
    );
    fails(
        a.matmul_t(&a, false, false),
        "ShapeMismatch",
        "matmul",
        &["transpose_a = false"],
    );
    fails(
        a.matmul_t(&a, true, true),
        "ShapeMismatch",
        "matmul",
        &["transpose_b = true"],
    );
    fails(
        a.matmul_t(&Tensor::zeros([3]).unwrap(), false, false),
        "Rank",
        "matmul",
        &["[3]"],
    );
    const MB: &str = "matmul_t_blocks";
    fails(
        a.matmul_t_blocks(&Tensor::zeros([2, 2, 3]).unwrap(), false, true, None, None),
        "Rank",
        MB,
        &["[2, 2, 3]"],
    );
    fails(
        a.matmul_t_blocks(&a, false, false, None, None),
        "ShapeMismatch",
        "matmul",
        &["3 vs 2"],
    );
    fails(
        a.matmul_t_blocks(&a, false, true, Some(&[1..3]), None),
        "InvalidArgument",
        MB,
        &["1..3"],
    );
    fails(
        a.matmul_t_blocks(&a, false, true, None, Some(&[2..1])),
        "InvalidArgument",
        MB,
        &["2..1"],
    );
}
