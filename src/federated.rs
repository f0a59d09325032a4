//! Federated learning, simulated in one process: clients that each hold their own
//! rows of a classification data set train a copy of the global model locally and
//! send back its weights, which the server averages.
//!
//! * [`split_iid`] and [`split_dirichlet`] deal the rows to clients: uniformly at
//!   random, or per class by proportions drawn from a symmetric Dirichlet(α) — the
//!   usual non-IID benchmark split (Hsu, Qi and Brown 2019): small α gives each
//!   client few classes.
//! * [`fed_avg`] runs FedAvg (McMahan et al. 2017): per round a seeded sample of
//!   `clients_per_round` clients, each running `local_epochs` of plain SGD on its rows
//!   from the global weights, and the new global weights the average of theirs
//!   weighted by their row counts. With `mu > 0` it is FedProx (Li et al. 2020): the
//!   local loss gains `μ/2 ‖w − w_global‖²`. With [`DpNoise`] each client's update
//!   `w − w_global` is clipped to an L2 norm and gets seeded Gaussian noise before it
//!   is sent (the Gaussian mechanism on the client update, as in DP-FedAvg).
//!
//! Clients run one after another on the model's device, in the same model (its
//! parameters are overwritten with the global weights before each client); the
//! global weights live on the host between clients and rounds, and are averaged in
//! f64 in client order, so a run is deterministic: the same inputs and seed give the
//! same bits. FedAvg with one client holding every row, one local epoch and no
//! shuffling is centralized SGD, bit for bit.
//!
//! [`fed_avg_on`] runs the same rounds with the sampled clients spread over the
//! ranks of a [`Collective`] (MPI processes, on one machine or many: one process
//! per client group): each rank trains its share of the round's clients, the
//! clients' weights are all-gathered, and every rank averages them in client order,
//! so every rank holds the same global model, with the same bits as [`fed_avg`]
//! on one process.

use crate::data::Dataset;
use crate::distributed::{self, Collective};
use crate::nn::{self, Module};
use crate::optim::{Optimizer, Sgd, SgdConfig};
use crate::rng::SplitMix64;
use crate::{Error, Result, Tensor};

/// Deals `n` rows to `clients` clients uniformly at random (a seeded shuffle cut
/// into near-equal parts, the first `n % clients` one row longer). Each client's rows
/// are in ascending order. `Err` for no client or fewer rows than clients (a client
/// would have no data).
pub fn split_iid(n: usize, clients: usize, seed: u64) -> Result<Vec<Vec<usize>>> {
    if clients == 0 {
        return Err(invalid("clients", "split_iid: 0 clients (at least 1)".into()));
    }
    if n < clients {
        return Err(invalid(
            "clients",
            format!("split_iid: {n} rows cannot give each of {clients} clients data (client {n} would have none)"),
        ));
    }
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order, &mut SplitMix64(seed));
    let (base, extra) = (n / clients, n % clients);
    let mut out = Vec::with_capacity(clients);
    let mut at = 0;
    for k in 0..clients {
        let len = base + usize::from(k < extra);
        let mut rows = order[at..at + len].to_vec();
        rows.sort_unstable();
        out.push(rows);
        at += len;
    }
    Ok(out)
}

/// Deals the rows to `clients` clients by label: for each class (in ascending
/// order), its rows in a seeded random order are cut by proportions drawn from a
/// symmetric Dirichlet(`alpha`) over the clients (gamma draws by Marsaglia and
/// Tsang on a seeded splitmix64 stream). Every row goes to exactly one client; each
/// client's rows are in ascending order. Small `alpha` (0.1) gives each client
/// mostly one or two classes, large `alpha` approaches [`split_iid`].
///
/// `Err` for no client, an `alpha` that is not positive and finite, or a split that
/// leaves a client with no data (naming the client: try another seed, a larger
/// `alpha` or fewer clients).
pub fn split_dirichlet(labels: &[u32], clients: usize, alpha: f64, seed: u64) -> Result<Vec<Vec<usize>>> {
    if clients == 0 {
        return Err(invalid("clients", "split_dirichlet: 0 clients (at least 1)".into()));
    }
    if !(alpha > 0.0 && alpha.is_finite()) {
        return Err(invalid(
            "alpha",
            format!("split_dirichlet: concentration α {alpha} must be positive and finite"),
        ));
    }
    let mut by_class: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
    for (i, &l) in labels.iter().enumerate() {
        by_class.entry(l).or_default().push(i);
    }
    let mut rng = SplitMix64(seed);
    let mut out = vec![Vec::new(); clients];
    for rows in by_class.values_mut() {
        shuffle(rows, &mut rng);
        let gammas: Vec<f64> = (0..clients).map(|_| gamma(alpha, &mut rng)).collect();
        let total: f64 = gammas.iter().sum();
        // Cut points at the rounded cumulative proportions; the last one is the end.
        let mut cum = 0.0;
        let mut start = 0;
        for (k, g) in gammas.iter().enumerate() {
            cum += g;
            let end = if k + 1 == clients {
                rows.len()
            } else {
                ((cum / total * rows.len() as f64).round() as usize).clamp(start, rows.len())
            };
            out[k].extend_from_slice(&rows[start..end]);
            start = end;
        }
    }
    for rows in &mut out {
        rows.sort_unstable();
    }
    if let Some(k) = out.iter().position(Vec::is_empty) {
        return Err(invalid(
            "clients",
            format!(
                "split_dirichlet: client {k} of {clients} got no data from the Dirichlet(α = {alpha}) split of \
                 {} rows with seed {seed}; use another seed, a larger α or fewer clients",
                labels.len()
            ),
        ));
    }
    Ok(out)
}

/// Gaussian noise on each client's update, the Gaussian mechanism of DP-FedAvg: the
/// update `w − w_global` is scaled down to L2 norm at most `clip`, then each value
/// gets independent noise of standard deviation `sigma · clip`, seeded by the run's
/// seed, the round and the client. Privacy accounting is [`crate::privacy`]'s.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DpNoise {
    /// The largest L2 norm of a client's update (over all parameters together).
    pub clip: f32,
    /// The noise multiplier σ, in units of `clip`.
    pub sigma: f32,
}

/// Settings of [`fed_avg`].
#[derive(Clone, Debug)]
pub struct FedConfig {
    /// Rounds of communication (default 10).
    pub rounds: usize,
    /// Clients sampled (without replacement, seeded) per round; at most the number of
    /// clients (default 10).
    pub clients_per_round: usize,
    /// Passes over its rows each sampled client makes per round (default 1).
    pub local_epochs: usize,
    /// Rows per local SGD step; a client's last batch may be smaller (default 32).
    pub batch_size: usize,
    /// Learning rate of the local plain SGD (default 0.1).
    pub lr: f32,
    /// FedProx' proximal weight μ: the local loss is the cross-entropy plus
    /// `μ/2 ‖w − w_global‖²`; 0 (the default) is FedAvg.
    pub mu: f32,
    /// Clip and noise each client's update before it is sent (default none).
    pub dp: Option<DpNoise>,
    /// Shuffle each client's rows every local epoch (seeded; default true); without,
    /// batches take the rows in the client's order.
    pub shuffle: bool,
    /// Seed of client sampling, shuffling and noise (default 0).
    pub seed: u64,
}

impl Default for FedConfig {
    fn default() -> Self {
        FedConfig {
            rounds: 10,
            clients_per_round: 10,
            local_epochs: 1,
            batch_size: 32,
            lr: 0.1,
            mu: 0.0,
            dp: None,
            shuffle: true,
            seed: 0,
        }
    }
}

/// What one round of [`fed_avg`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct RoundReport {
    /// The round, from 1.
    pub round: usize,
    /// The clients sampled, in ascending order (the order of the average).
    pub clients: Vec<usize>,
    /// Rows those clients hold together (the weights' denominator).
    pub rows: usize,
    /// Accuracy of the new global model on the test set, when one was given.
    pub test_accuracy: Option<f64>,
    /// Bytes each sampled client sends to the server: its weights as f32 (the
    /// download of the global model is as large).
    pub bytes_per_client: usize,
}

/// Trains `model` by FedAvg (FedProx with `config.mu > 0`) over `clients`, each a
/// list of row indices into `data` (from [`split_iid`] or [`split_dirichlet`]), for
/// `config.rounds` rounds; the model's parameters hold the starting global weights on
/// entry and the final ones on return. Local training is plain SGD on the
/// cross-entropy of `model(x)` (logits `[batch, classes]`) against the labels. With
/// `test`, each round reports the global model's accuracy on it (in inference mode).
///
/// `Err` for a client with no data or a row index out of range (naming the client),
/// no clients, a setting out of range (0 rounds, local epochs or batch size; more
/// clients per round than clients; a learning rate, μ, clip or σ negative or not
/// finite), test data of another width, or an error of the model's device.
pub fn fed_avg(
    model: &dyn Module,
    data: &Dataset,
    clients: &[Vec<usize>],
    test: Option<&Dataset>,
    config: &FedConfig,
) -> Result<Vec<RoundReport>> {
    rounds(None, model, data, clients, test, config)
}

/// [`fed_avg`] with each round's sampled clients spread over the ranks of `comm`
/// (the `j`-th sampled client on rank `j % size`): every rank must call it with the
/// same model, data, clients and settings (each rank loads the data; a rank reads
/// only its clients' rows). Rank 0's starting weights are broadcast first. After
/// each round every rank holds the same global weights, with the same bits as
/// [`fed_avg`] in one process; the reports are the same on every rank.
///
/// `Err` as [`fed_avg`], and for a failed collective (a rank out of step).
pub fn fed_avg_on(
    comm: &dyn Collective,
    model: &dyn Module,
    data: &Dataset,
    clients: &[Vec<usize>],
    test: Option<&Dataset>,
    config: &FedConfig,
) -> Result<Vec<RoundReport>> {
    rounds(Some(comm), model, data, clients, test, config)
}

/// The rounds of [`fed_avg`] and [`fed_avg_on`].
fn rounds(
    comm: Option<&dyn Collective>,
    model: &dyn Module,
    data: &Dataset,
    clients: &[Vec<usize>],
    test: Option<&Dataset>,
    config: &FedConfig,
) -> Result<Vec<RoundReport>> {
    check(data, clients, test, config)?;
    let params = model.parameters();
    let Some(dev) = params.first().map(|p| p.device().clone()) else {
        return Err(invalid("model", "fed_avg: the model has no parameters".into()));
    };
    let numel: usize = params.iter().map(Tensor::numel).sum();
    let mut global: Vec<Vec<f32>> = params.iter().map(Tensor::to_vec).collect::<Result<_>>()?;
    if let Some(comm) = comm {
        for (p, g) in params.iter().zip(&mut global) {
            distributed::broadcast(comm, g, 0)?;
            p.assign(g)?;
        }
    }
    let test_set = match test {
        Some(t) => Some((Tensor::from_vec(t.features.clone(), &[t.n, t.dim], &dev)?, &t.labels)),
        None => None,
    };
    let mut reports = Vec::with_capacity(config.rounds);
    for round in 0..config.rounds {
        let chosen = sample_clients(
            clients.len(),
            config.clients_per_round,
            mix(config.seed, &[1, round as u64]),
        );
        let rows: usize = chosen.iter().map(|&k| clients[k].len()).sum();
        let (rank, size) = comm.map_or((0, 1), |c| (c.rank(), c.size()));
        let mut locals = Vec::new();
        for (j, &k) in chosen.iter().enumerate() {
            if j % size != rank {
                continue;
            }
            let mut local = train_client(model, &params, &global, data, &clients[k], config, round, k)?;
            if let Some(dp) = config.dp {
                privatize(&mut local, &global, dp, mix(config.seed, &[2, round as u64, k as u64]));
            }
            locals.push(local);
        }
        if let Some(comm) = comm {
            locals = gather_clients(comm, &locals, chosen.len(), &global)?;
        }
        // The weighted average in f64, in client order.
        let mut sum: Vec<Vec<f64>> = global.iter().map(|g| vec![0.0; g.len()]).collect();
        for (&k, local) in chosen.iter().zip(&locals) {
            let weight = clients[k].len() as f64 / rows as f64;
            for (s, w) in sum.iter_mut().zip(local) {
                for (s, &w) in s.iter_mut().zip(w) {
                    *s += weight * f64::from(w);
                }
            }
        }
        global = sum.iter().map(|s| s.iter().map(|&v| v as f32).collect()).collect();
        for (p, g) in params.iter().zip(&global) {
            p.assign(g)?;
        }
        let test_accuracy = match &test_set {
            Some((x, labels)) => Some(accuracy(model, x, labels)?),
            None => None,
        };
        reports.push(RoundReport {
            round: round + 1,
            clients: chosen,
            rows,
            test_accuracy,
            bytes_per_client: numel * std::mem::size_of::<f32>(),
        });
    }
    Ok(reports)
}

/// Every rank's clients' weights (rank `r` holds the sampled clients `j` with
/// `j % size == r`, in order), all-gathered and put back in the order of the
/// `count` sampled clients; `shape` gives the parameters' lengths.
fn gather_clients(
    comm: &dyn Collective,
    mine: &[Vec<Vec<f32>>],
    count: usize,
    shape: &[Vec<f32>],
) -> Result<Vec<Vec<Vec<f32>>>> {
    let numel: usize = shape.iter().map(Vec::len).sum();
    let flat: Vec<f32> = mine.iter().flatten().flatten().copied().collect();
    let parts = distributed::all_gather(comm, &flat)?;
    let size = parts.len();
    let mut out = Vec::with_capacity(count);
    for j in 0..count {
        let (rank, slot) = (j % size, j / size);
        let part = &parts[rank];
        let expected = count.saturating_sub(rank).div_ceil(size) * numel;
        if part.len() != expected {
            return Err(Error::Distributed(format!(
                "federated: rank {rank} sent {} values for its clients, {expected} expected: the ranks are out of step",
                part.len()
            )));
        }
        let mut at = slot * numel;
        let mut client = Vec::with_capacity(shape.len());
        for p in shape {
            client.push(part[at..at + p.len()].to_vec());
            at += p.len();
        }
        out.push(client);
    }
    Ok(out)
}

/// One client's local training from the global weights: its weights afterwards.
#[allow(clippy::too_many_arguments)]
fn train_client(
    model: &dyn Module,
    params: &[Tensor],
    global: &[Vec<f32>],
    data: &Dataset,
    rows: &[usize],
    config: &FedConfig,
    round: usize,
    client: usize,
) -> Result<Vec<Vec<f32>>> {
    let dev = params[0].device().clone();
    for (p, g) in params.iter().zip(global) {
        p.assign(g)?;
    }
    let anchors: Vec<Tensor> = if config.mu > 0.0 {
        params
            .iter()
            .zip(global)
            .map(|(p, g)| Tensor::from_vec(g.clone(), p.shape(), &dev))
            .collect::<Result<_>>()?
    } else {
        Vec::new()
    };
    let mut opt = Sgd::new(
        params.to_vec(),
        SgdConfig {
            lr: config.lr,
            ..Default::default()
        },
    );
    let mut order = rows.to_vec();
    for epoch in 0..config.local_epochs {
        if config.shuffle {
            let seed = mix(config.seed, &[3, round as u64, client as u64, epoch as u64]);
            shuffle(&mut order, &mut SplitMix64(seed));
        }
        for batch in order.chunks(config.batch_size) {
            let mut features = Vec::with_capacity(batch.len() * data.dim);
            for &i in batch {
                features.extend_from_slice(&data.features[i * data.dim..(i + 1) * data.dim]);
            }
            let labels: Vec<u32> = batch.iter().map(|&i| data.labels[i]).collect();
            let x = Tensor::from_vec(features, &[batch.len(), data.dim], &dev)?;
            let y = Tensor::from_labels(&labels, &dev)?;
            let mut loss = nn::loss::cross_entropy(&model.forward(&x), &y);
            for (p, a) in params.iter().zip(&anchors) {
                loss = &loss + &(p - a).square().sum().mul_scalar(config.mu / 2.0);
            }
            opt.step(&loss.backward()?)?;
        }
    }
    params.iter().map(Tensor::to_vec).collect()
}

/// Clips `local − global` to L2 norm `clip` and adds `N(0, (σ·clip)²)` to each value.
fn privatize(local: &mut [Vec<f32>], global: &[Vec<f32>], dp: DpNoise, seed: u64) {
    let norm = local
        .iter()
        .zip(global)
        .flat_map(|(l, g)| l.iter().zip(g).map(|(&l, &g)| f64::from(l - g).powi(2)))
        .sum::<f64>()
        .sqrt();
    let scale = if norm > f64::from(dp.clip) {
        f64::from(dp.clip) / norm
    } else {
        1.0
    };
    let total: usize = local.iter().map(Vec::len).sum();
    let noise = crate::rng::normal(seed, total);
    let std = f64::from(dp.sigma) * f64::from(dp.clip);
    let mut at = 0;
    for (l, g) in local.iter_mut().zip(global) {
        for (l, &g) in l.iter_mut().zip(g) {
            let update = f64::from(*l - g) * scale + std * f64::from(noise[at]);
            *l = (f64::from(g) + update) as f32;
            at += 1;
        }
    }
}

/// The share of `x`'s rows whose largest logit is at their label.
fn accuracy(model: &dyn Module, x: &Tensor, labels: &[u32]) -> Result<f64> {
    let logits = nn::inference(|| model.forward(x)).to_vec()?;
    let classes = logits.len() / labels.len().max(1);
    let right = logits
        .chunks(classes.max(1))
        .zip(labels)
        .filter(|(row, &l)| {
            let best = row
                .iter()
                .enumerate()
                .fold(0, |best, (j, &v)| if v > row[best] { j } else { best });
            best == l as usize
        })
        .count();
    Ok(right as f64 / labels.len().max(1) as f64)
}

/// `count` of `clients` clients, without replacement (a seeded partial
/// Fisher–Yates), in ascending order.
fn sample_clients(clients: usize, count: usize, seed: u64) -> Vec<usize> {
    let mut all: Vec<usize> = (0..clients).collect();
    let mut rng = SplitMix64(seed);
    for i in 0..count.min(clients) {
        let j = i + rng.below((clients - i) as u128) as usize;
        all.swap(i, j);
    }
    let mut chosen = all[..count.min(clients)].to_vec();
    chosen.sort_unstable();
    chosen
}

/// Fisher–Yates on `v` with `rng`.
fn shuffle(v: &mut [usize], rng: &mut SplitMix64) {
    for i in (1..v.len()).rev() {
        let j = rng.below(i as u128 + 1) as usize;
        v.swap(i, j);
    }
}

/// A seed for one purpose of one round or client: `seed` and `parts` through splitmix64.
fn mix(seed: u64, parts: &[u64]) -> u64 {
    let mut rng = SplitMix64(seed);
    let mut out = rng.next_u64();
    for &p in parts {
        rng.0 ^= p.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ out;
        out = rng.next_u64();
    }
    out
}

/// A standard normal draw (Box–Muller, the cosine half).
fn standard_normal(rng: &mut SplitMix64) -> f64 {
    let u1 = 1.0 - rng.unit(); // (0, 1]
    let u2 = rng.unit();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A Gamma(`alpha`, 1) draw by Marsaglia and Tsang (2000); for `alpha < 1`, a
/// Gamma(`alpha + 1`) draw times `U^(1/alpha)`.
fn gamma(alpha: f64, rng: &mut SplitMix64) -> f64 {
    if alpha < 1.0 {
        let u = 1.0 - rng.unit();
        return gamma(alpha + 1.0, rng) * u.powf(1.0 / alpha);
    }
    let d = alpha - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = standard_normal(rng);
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u = 1.0 - rng.unit();
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

fn invalid(setting: &'static str, message: String) -> Error {
    Error::InvalidSetting { setting, message }
}

fn check(data: &Dataset, clients: &[Vec<usize>], test: Option<&Dataset>, c: &FedConfig) -> Result<()> {
    if clients.is_empty() {
        return Err(invalid("clients", "fed_avg: no clients".into()));
    }
    for (k, rows) in clients.iter().enumerate() {
        if rows.is_empty() {
            return Err(invalid(
                "clients",
                format!("fed_avg: client {k} has no data (0 rows); every client needs at least one row to train on"),
            ));
        }
        if let Some(&i) = rows.iter().find(|&&i| i >= data.n) {
            return Err(invalid(
                "clients",
                format!("fed_avg: client {k} holds row {i}, but the data has {} rows", data.n),
            ));
        }
    }
    let counts = [
        ("rounds", c.rounds),
        ("local_epochs", c.local_epochs),
        ("batch_size", c.batch_size),
        ("clients_per_round", c.clients_per_round),
    ];
    if let Some((name, _)) = counts.iter().find(|(_, v)| *v == 0) {
        return Err(invalid(name, format!("fed_avg: {name} is 0 (at least 1)")));
    }
    if c.clients_per_round > clients.len() {
        return Err(invalid(
            "clients_per_round",
            format!(
                "fed_avg: {} clients per round, but there are {} clients",
                c.clients_per_round,
                clients.len()
            ),
        ));
    }
    let mut reals = vec![("lr", c.lr), ("mu", c.mu)];
    if let Some(dp) = c.dp {
        reals.extend([("dp clip", dp.clip), ("dp sigma", dp.sigma)]);
    }
    if let Some((name, v)) = reals.iter().find(|(_, v)| !(v.is_finite() && *v >= 0.0)) {
        return Err(invalid(
            name,
            format!("fed_avg: {name} {v} must be finite and not negative"),
        ));
    }
    if let Some(t) = test {
        if t.dim != data.dim || t.labels.len() != t.n || t.n == 0 {
            return Err(invalid(
                "test",
                format!(
                    "fed_avg: the test data has {} rows of {} features ({} labels); the training data has {} features",
                    t.n,
                    t.dim,
                    t.labels.len(),
                    data.dim
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gamma_draws_have_mean_alpha() {
        for alpha in [0.1, 1.0, 5.0] {
            let mut rng = SplitMix64(7);
            let n = 20_000;
            let mean = (0..n).map(|_| gamma(alpha, &mut rng)).sum::<f64>() / n as f64;
            assert!((mean - alpha).abs() < 0.05 * alpha.max(1.0), "α {alpha}: mean {mean}");
        }
    }

    #[test]
    fn sampled_clients_are_distinct_sorted_and_seeded() {
        let a = sample_clients(10, 4, 3);
        assert_eq!(a.len(), 4);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(a, sample_clients(10, 4, 3));
        assert_eq!(sample_clients(5, 5, 1), vec![0, 1, 2, 3, 4]);
    }
}
