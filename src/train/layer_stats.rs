//! Layer health after training, for the report: gradient and weight norms per
//! layer on one batch (no update), the fraction of ReLU units that never fire, and of
//! sigmoid/tanh outputs that are saturated.

use super::history::LayerStat;
use super::loss::Loss;
use crate::nn::{Module, Sequential};
use crate::{Result, Tensor};

/// Per-layer gradient and weight norms on one batch (no update), and for ReLU,
/// sigmoid and tanh layers the fraction of dead or saturated units (each read back
/// with an await, for the browser).
pub(crate) async fn layer_stats(net: &Sequential, loss: &Loss, x: &Tensor, y: &Tensor) -> Result<Vec<LayerStat>> {
    let trace = net.trace(x);
    let out = trace.last().cloned().unwrap_or_else(|| x.clone());
    let grads = loss.of(&out, y, None)?.backward()?;
    let named = net.named_parameters();
    let norm = |t: &Tensor| scalar(t.square().sum().sqrt());
    let mut stats: Vec<LayerStat> = Vec::new();
    for (i, (layer, h)) in net.layers().iter().zip(&trace).enumerate() {
        let prefix = format!("{i}.");
        let params: Vec<&Tensor> = named
            .iter()
            .filter(|(n, _)| n.starts_with(&prefix))
            .map(|(_, t)| t)
            .collect();
        let dev = h.device();
        let fraction = |mask: Tensor| scalar(mask.mean());
        let (dead, saturated) = match layer.name().as_str() {
            "ReLU" => {
                let alive = h.gt_mask(&Tensor::zeros(&[], dev)).max_axis(0, false);
                (Some(1.0 - fraction(alive).await?), None)
            }
            "Sigmoid" => (
                None,
                Some(fraction(h.add_scalar(-0.5).abs().gt_mask(&Tensor::full(&[], 0.49, dev))).await?),
            ),
            "Tanh" => (
                None,
                Some(fraction(h.abs().gt_mask(&Tensor::full(&[], 0.99, dev))).await?),
            ),
            _ => (None, None),
        };
        if params.is_empty() {
            // An activation: its statistics belong to the layer before it.
            match stats.last_mut() {
                Some(prev) if dead.is_some() || saturated.is_some() => {
                    prev.name = format!("{} + {}", prev.name, layer.name());
                    prev.dead_relu = dead.or(prev.dead_relu);
                    prev.saturated = saturated.or(prev.saturated);
                }
                _ => {}
            }
            continue;
        }
        let mut g2 = 0.0;
        let mut w2 = 0.0;
        for p in params {
            w2 += norm(p).await?.powi(2);
            if let Some(g) = grads.get(p) {
                g2 += norm(g).await?.powi(2);
            }
        }
        stats.push(LayerStat {
            name: format!("{i} {}", layer.name()),
            grad_norm: g2.sqrt(),
            weight_norm: w2.sqrt(),
            dead_relu: dead,
            saturated,
        });
    }
    Ok(stats)
}

/// A scalar's value, read back with an await.
async fn scalar(t: Tensor) -> Result<f64> {
    Ok(f64::from(t.to_vec_async().await?[0]))
}
