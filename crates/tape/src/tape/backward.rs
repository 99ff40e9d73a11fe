//! The backward engine: a forward pass over the record finds what derives
//! from the sources, a reverse pass applies the rules from `rules/`.

#[allow(unused_imports)]
use super::*;
use crate::deferred::{DeferredGradient, GradientProduct};

impl GradientTape {
    /// The engine: gradients of the (seeded) targets for each source, with
    /// masks applied; `None` where unconnected. Leaves the tape unchanged.
    pub(crate) fn compute<T: Element>(
        &self,
        targets: &[&Tensor<T>],
        seeds: Option<&[Tensor<T>]>,
        sources: &[SourceRef<T>],
    ) -> Result<Vec<Option<Tensor<T>>>> {
        let grads = crate::instances::table::<T>().compute(self, targets, seeds, sources, false)?;
        // nothing is deferred when not asked for
        grads
            .into_iter()
            .map(|g| g.map(DeferredGradient::into_tensor).transpose())
            .collect()
    }

    /// [`compute`](GradientTape::compute), deferring the gradient of each
    /// source whose only contribution is the weight operand of a 2-D matrix
    /// product (`deferred.rs`).
    pub(crate) fn compute_deferred<T: Element>(
        &self,
        targets: &[&Tensor<T>],
        sources: &[SourceRef<T>],
    ) -> Result<Vec<Option<DeferredGradient<T>>>> {
        crate::instances::table::<T>().compute(self, targets, None, sources, true)
    }

    pub(crate) fn compute_native<T: Element>(
        &self,
        targets: &[&Tensor<T>],
        seeds: Option<&[Tensor<T>]>,
        sources: &[SourceRef<T>],
        defer: bool,
    ) -> Result<Vec<Option<DeferredGradient<T>>>> {
        // this tape does not record its own gradient computation
        struct Pause<'a>(&'a TapeInner);
        impl Drop for Pause<'_> {
            fn drop(&mut self) {
                self.0.paused.set(self.0.paused.get() - 1);
                refresh_recording_flag();
            }
        }
        self.inner.paused.set(self.inner.paused.get() + 1);
        refresh_recording_flag();
        let _pause = Pause(&self.inner);
        let st = self.inner.state.borrow();
        let (n, n_leaves) = (st.nodes.len(), st.leaves.len());

        // forward: which leaves and nodes derive from a requested source
        let source_slots: Vec<Option<Slot>> = sources.iter().map(|s| st.slot_of(s.id)).collect();
        let mut derived_leaf = vec![false; n_leaves];
        let mut derived_node = vec![false; n];
        let mut keep_node = vec![false; n]; // outputs that are sources themselves
        for slot in source_slots.iter().flatten() {
            match *slot {
                Slot::Leaf(l) => derived_leaf[l as usize] = true,
                Slot::Node(i) => {
                    derived_node[i as usize] = true;
                    keep_node[i as usize] = true;
                }
            }
        }
        let is_derived = |slot: &Option<Slot>, dn: &[bool]| match *slot {
            None => false,
            Some(Slot::Leaf(l)) => derived_leaf[l as usize],
            Some(Slot::Node(i)) => dn[i as usize],
        };
        for (i, node) in st.nodes.iter().enumerate() {
            if !derived_node[i]
                && st
                    .slots_of(node)
                    .iter()
                    .any(|s| is_derived(s, &derived_node))
            {
                derived_node[i] = true;
            }
        }

        // mask hints: reads of masked source variables
        let mut hint_node: Vec<Option<&ResolvedMask>> = Vec::new();
        let masked_leaves: FxHashMap<u32, &ResolvedMask> = sources
            .iter()
            .zip(&source_slots)
            .filter_map(|(s, slot)| match (slot, &s.mask) {
                (Some(Slot::Leaf(l)), Some(m)) => Some((*l, m.as_ref())),
                _ => None,
            })
            .collect();
        if !masked_leaves.is_empty() {
            hint_node = st
                .nodes
                .iter()
                .map(|node| match (&node.op, st.slots_of(node).first()) {
                    (NodeOp::ReadVariable, Some(Some(Slot::Leaf(l)))) => {
                        masked_leaves.get(l).copied()
                    }
                    _ => None,
                })
                .collect();
        }

        // deferred weight gradients: (matmul node, input) -> source index
        let deferred_at = if defer && !rime_tensor::record::is_recording() {
            deferrable(
                &st,
                targets,
                sources,
                &source_slots,
                &derived_node,
                &keep_node,
            )
        } else {
            FxHashMap::default()
        };
        let mut deferred: FxHashMap<usize, GradientProduct<T>> = FxHashMap::default();

        // seeds
        let mut acc = Accumulated::new(n_leaves, n);
        for (i, t) in targets.iter().enumerate() {
            let slot = st.slot_of(t.id());
            if !is_derived(&slot, &derived_node) {
                continue;
            }
            let seed = match seeds {
                Some(s) => s[i].clone(),
                None => Tensor::ones_like(t),
            };
            acc.add(slot, T::into_dyn(seed), false)?;
        }

        // reverse
        let mut hints: SmallVec<[Option<&ResolvedMask>; 4]> = SmallVec::new();
        let mut inputs: Vec<&DynTensor> = Vec::new();
        let mut needs = rules::InputSet::default();
        for (i, node) in st.nodes.iter().enumerate().rev() {
            if !derived_node[i] {
                continue;
            }
            let g = if keep_node[i] {
                acc.node[i].clone()
            } else {
                acc.node[i].take()
            };
            let Some(g) = g else { continue };
            needs.clear();
            let slots = st.slots_of(node);
            for (k, s) in slots.iter().enumerate() {
                if is_derived(s, &derived_node) {
                    needs.insert(k);
                }
            }
            if needs.is_empty() {
                continue;
            }
            if let NodeOp::ReadVariable = node.op {
                // the read passes its gradient on unchanged
                let premasked = acc.node_premasked[i];
                acc.add(slots[0], g, premasked)?;
                continue;
            }
            // after deferring a dense op's weight gradient, its other
            // gradients follow from the dz already computed (and the bias
            // gradient may have come with it)
            let mut rest: Option<(NodeOp, DynTensor)> = None;
            if !deferred_at.is_empty() && is_product(&node.op) {
                let bias;
                (rest, bias) = defer_products(
                    &st,
                    node,
                    i,
                    &g,
                    sources,
                    &deferred_at,
                    &mut needs,
                    &mut deferred,
                )?;
                if let Some(db) = bias {
                    acc.add(slots[2], db, false)?;
                    needs.remove(2);
                }
                if needs.is_empty() {
                    continue;
                }
            }
            hints.clear();
            if !hint_node.is_empty() {
                hints.extend(slots.iter().map(|s| match s {
                    Some(Slot::Node(j)) => hint_node[*j as usize],
                    _ => None,
                }));
            }
            inputs.clear();
            let output = st.io(node, &mut inputs);
            let (op, g) = match &rest {
                Some((op, dz)) => (op, dz),
                None => (&node.op, &g),
            };
            rules::backward(
                op,
                &inputs,
                output,
                g,
                &needs,
                &hints,
                &mut |k, value, premasked| acc.add(slots[k], value, premasked),
            )?;
        }

        sources
            .iter()
            .zip(&source_slots)
            .enumerate()
            .map(|(k, (s, slot))| {
                // taken at the source's last mention (so that a mask is
                // applied in place), cloned before: a source may be listed
                // twice
                let last = !source_slots[k + 1..].contains(slot);
                let take = |g: &mut Option<DynTensor>| if last { g.take() } else { g.clone() };
                let (g, premasked) = match *slot {
                    None => (None, false),
                    Some(Slot::Leaf(l)) => (
                        take(&mut acc.leaf[l as usize]),
                        acc.leaf_premasked[l as usize],
                    ),
                    Some(Slot::Node(i)) => (
                        take(&mut acc.node[i as usize]),
                        acc.node_premasked[i as usize],
                    ),
                };
                if let Some(p) = deferred.remove(&k) {
                    // the analysis found this product to be the only
                    // contribution, so nothing was accumulated
                    debug_assert!(g.is_none());
                    return Ok(Some(DeferredGradient::Product(p)));
                }
                let Some(g) = g else { return Ok(None) };
                let t = T::from_dyn(&g)
                    .cloned()
                    .ok_or_else(|| Error::InvalidArgument {
                        call: "gradient",
                        msg: format!(
                            "a source of dtype {} received a gradient of another dtype",
                            T::DTYPE
                        ),
                    })?;
                drop(g);
                Ok(Some(DeferredGradient::Dense(apply_mask(
                    t,
                    premasked,
                    s.mask.as_deref(),
                )?)))
            })
            .collect()
    }
}

/// The sources whose gradient can be deferred, keyed by the `(node, input)`
/// of the matrix product that makes it: a leaf source listed once, not a
/// target, whose one use among the nodes on the gradient path is a 2-D
/// matrix product, directly or through one variable read used once. A
/// source with any other use (a weight shared by two layers, a weight
/// penalty) is left to the usual accumulation.
fn deferrable<T: Element>(
    st: &TapeState,
    targets: &[&Tensor<T>],
    sources: &[SourceRef<T>],
    source_slots: &[Option<Slot>],
    derived_node: &[bool],
    keep_node: &[bool],
) -> FxHashMap<(usize, usize), usize> {
    let mut found = FxHashMap::default();
    let mut leaf_source: FxHashMap<u32, usize> = FxHashMap::default();
    for (k, (s, slot)) in sources.iter().zip(source_slots).enumerate() {
        if let Some(Slot::Leaf(l)) = *slot
            && s.shape.rank() == 2
            && source_slots
                .iter()
                .filter(|x| **x == Some(Slot::Leaf(l)))
                .count()
                == 1
        {
            leaf_source.insert(l, k);
        }
    }
    if leaf_source.is_empty() {
        return found;
    }
    // uses of each leaf and node output by the nodes on the path (and by
    // the targets, whose seeds are contributions too)
    let n = st.nodes.len();
    let mut leaf_uses: FxHashMap<u32, (u32, Option<(usize, usize)>)> = FxHashMap::default();
    let mut node_uses: Vec<(u32, Option<(usize, usize)>)> = vec![(0, None); n];
    let mut count = |slot: Option<Slot>, at: Option<(usize, usize)>| match slot {
        Some(Slot::Leaf(l)) if leaf_source.contains_key(&l) => {
            let e = leaf_uses.entry(l).or_insert((0, None));
            *e = (e.0 + 1, at);
        }
        Some(Slot::Node(j)) => {
            let e = &mut node_uses[j as usize];
            *e = (e.0 + 1, at);
        }
        _ => {}
    };
    for t in targets {
        count(st.slot_of(t.id()), None);
    }
    for (i, node) in st.nodes.iter().enumerate() {
        if derived_node[i] {
            for (k, s) in st.slots_of(node).iter().enumerate() {
                count(*s, Some((i, k)));
            }
        }
    }
    let is_matmul = |i: usize| is_product(&st.nodes[i].op);
    for (&l, &k) in &leaf_source {
        let Some(&(1, Some((i, pos)))) = leaf_uses.get(&l) else {
            continue;
        };
        let at = if is_matmul(i) {
            Some((i, pos))
        } else if matches!(st.nodes[i].op, NodeOp::ReadVariable) && !keep_node[i] {
            match node_uses[i] {
                (1, Some((j, pos))) if is_matmul(j) => Some((j, pos)),
                _ => None,
            }
        } else {
            None
        };
        if let Some(at) = at {
            found.insert(at, k);
        }
    }
    found
}

/// Whether a node is a matrix product whose two first inputs' gradients
/// are products (`deferrable`): a matmul, or a dense op (whose bias, its
/// third input, is never a 2-D source).
fn is_product(op: &NodeOp) -> bool {
    matches!(op, NodeOp::Tensor(Op::MatMul { .. } | Op::Dense { .. }))
}

/// At a matrix product whose input makes a deferrable source's only
/// contribution: records that contribution as a [`GradientProduct`] and
/// takes the input out of `needs` (if the shapes do not allow it, the
/// input stays and its gradient is computed as usual). For a dense op the
/// product's right factor is `dz = dy ⊙ act'(y)`; then returns the op
/// and gradient that give the node's other gradients from that `dz` (a
/// linear dense op, `dz`), and the bias gradient if it was computed with
/// `dz`.
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn defer_products<T: Element>(
    st: &TapeState,
    node: &Node,
    i: usize,
    g: &DynTensor,
    sources: &[SourceRef<T>],
    deferred_at: &FxHashMap<(usize, usize), usize>,
    needs: &mut rules::InputSet,
    deferred: &mut FxHashMap<usize, GradientProduct<T>>,
) -> Result<(Option<(NodeOp, DynTensor)>, Option<DynTensor>)> {
    let (transpose_a, transpose_b, activation) = match node.op {
        NodeOp::Tensor(Op::MatMul {
            transpose_a,
            transpose_b,
        }) => (transpose_a, transpose_b, None),
        NodeOp::Tensor(Op::Dense { activation }) => (false, false, Some(activation)),
        _ => return Ok((None, None)),
    };
    if !(0..2).any(|pos| deferred_at.contains_key(&(i, pos))) {
        return Ok((None, None));
    }
    let mut inputs = Vec::new();
    let output = st.io(node, &mut inputs);
    let (Some(g), Some(a), Some(b)) = (
        T::from_dyn(g),
        inputs.first().and_then(|t| T::from_dyn(t)),
        inputs.get(1).and_then(|t| T::from_dyn(t)),
    ) else {
        return Ok((None, None));
    };
    let bias = inputs
        .get(2)
        .and_then(|t| T::from_dyn(t))
        .filter(|_| needs.contains(2));
    let (dz, db) = match (activation, T::from_dyn(output)) {
        (Some(act), Some(y)) => {
            let (dz, db) = rules::dense::output_grads(act, y, g, bias)?;
            (Some(dz), db)
        }
        _ => (None, None),
    };
    let g = dz.as_ref().unwrap_or(g);
    let mut any = false;
    for pos in 0..2 {
        let Some(&k) = deferred_at.get(&(i, pos)) else {
            continue;
        };
        let operands = rules::matmul::gradient_product(transpose_a, transpose_b, pos, a, b, g);
        if let Some(p) = GradientProduct::new(operands, &sources[k].shape, sources[k].mask.clone())
        {
            deferred.insert(k, p);
            needs.remove(pos);
            any = true;
        }
    }
    Ok(match dz {
        Some(dz) if any => (
            Some((
                NodeOp::Tensor(Op::Dense {
                    activation: rime_tensor::DenseActivation::Linear,
                }),
                T::into_dyn(dz),
            )),
            db.map(T::into_dyn),
        ),
        _ => (None, None),
    })
}

/// The gradients accumulated so far for the leaves and the node outputs,
/// and per entry whether it is already exactly zero at the frozen elements
/// of its source's mask (kept apart from the tensors, so that moving a
/// gradient moves two words).
pub(crate) struct Accumulated {
    pub(crate) leaf: Vec<Option<DynTensor>>,
    pub(crate) node: Vec<Option<DynTensor>>,
    pub(crate) leaf_premasked: Vec<bool>,
    pub(crate) node_premasked: Vec<bool>,
}

impl Accumulated {
    pub(crate) fn new(leaves: usize, nodes: usize) -> Self {
        Accumulated {
            leaf: vec![None; leaves],
            node: vec![None; nodes],
            leaf_premasked: vec![false; leaves],
            node_premasked: vec![false; nodes],
        }
    }

    /// Adds `g` to the gradient of `slot` (a tracked input).
    #[inline]
    pub(crate) fn add(&mut self, slot: Option<Slot>, g: DynTensor, premasked: bool) -> Result<()> {
        let (entry, flag) = match slot {
            Some(Slot::Leaf(l)) => (
                &mut self.leaf[l as usize],
                &mut self.leaf_premasked[l as usize],
            ),
            Some(Slot::Node(i)) => (
                &mut self.node[i as usize],
                &mut self.node_premasked[i as usize],
            ),
            None => {
                return Err(Error::InvalidArgument {
                    call: "gradient",
                    msg: "a gradient reached an input the tape does not track".into(),
                });
            }
        };
        match entry {
            None => {
                *entry = Some(g);
                *flag = premasked;
            }
            Some(acc) => {
                *acc = match (&*acc, &g) {
                    (DynTensor::F32(a), DynTensor::F32(b)) => DynTensor::F32(a.add(b)?),
                    (DynTensor::F64(a), DynTensor::F64(b)) => DynTensor::F64(a.add(b)?),
                    _ => {
                        return Err(Error::InvalidArgument {
                            call: "gradient",
                            msg: "gradients of different dtypes reached one tensor".into(),
                        });
                    }
                };
                *flag &= premasked;
            }
        }
        Ok(())
    }
}

/// Zeros a gradient at the frozen elements of its mask: differentiably if
/// another tape records this computation, in place otherwise.
pub(crate) fn apply_mask<T: Element>(
    g: Tensor<T>,
    premasked: bool,
    mask: Option<&ResolvedMask>,
) -> Result<Tensor<T>> {
    let Some(mask) = mask else { return Ok(g) };
    if premasked || mask.frozen_runs().is_empty() {
        return Ok(g);
    }
    if rime_tensor::record::is_recording() {
        return Ok(Tensor::select(
            &mask.to_tensor(),
            &g,
            &Tensor::scalar(T::zero()),
        )?);
    }
    let mut g = g;
    mask.zero_frozen(g.make_mut());
    Ok(g)
}

pub(crate) fn fill_unconnected<T: Element>(
    grads: Vec<Option<Tensor<T>>>,
    sources: &[SourceRef<T>],
    unconnected: UnconnectedGradients,
) -> Result<Vec<Option<Tensor<T>>>> {
    grads
        .into_iter()
        .zip(sources)
        .map(|(g, s)| match (g, unconnected) {
            (None, UnconnectedGradients::Zero) => Ok(Some(Tensor::zeros(s.shape.clone())?)),
            (g, _) => Ok(g),
        })
        .collect()
}
