//! The seed's MLP (784 → 128 ReLU → 10, Adam 1e-3, cross-entropy) trained data-parallel
//! over MPI: every rank trains on its shard of every batch and the gradients are
//! averaged over the ranks each step (`wgnn::distributed`). Needs the `mpi` feature.
//!
//! It first times the all-reduce of the model's gradients, then (with more than one
//! rank) trains on rank 0 alone with all the host's cores for a baseline while the
//! others wait, then every rank trains a model of its own at the same time with its
//! share of the cores (the machine's ceiling for that many processes), then trains
//! data-parallel on every rank, and prints per-rank and global throughput, the
//! ceiling, the scaling efficiency (global throughput / (ranks × one rank's)) and the
//! test accuracy.
//!
//! ```text
//! cargo build --release --features mpi --example distributed_mnist
//! mpirun --bind-to none -np 2 target/release/examples/distributed_mnist [--device cpu|gpu]
//!     [--epochs 3] [--batch 32] [--data DIR] [--no-baseline] [--no-shared-memory]
//! ```
//! Open MPI binds each of up to two ranks to one core by default, which leaves the
//! baseline (rank 0 alone, meant to have every core) one core: `--bind-to none` gives
//! it all of them, and the example says so when rank 0 may use fewer CPUs than the
//! host has online. The data-parallel run is unchanged by it (`distributed::init`
//! gives each rank its share of the cores either way).
//! `--batch` is per rank; `--data DIR` reads IDX files (e.g. Fashion-MNIST in
//! `/usr/share/datasets/fashion-mnist`), else the committed 5000-image MNIST subset.
//! As root, add `--allow-run-as-root` to mpirun; `--mca btl self,tcp` forces TCP
//! (loopback or network) instead of shared memory.

use clap::Parser;
use std::path::PathBuf;
use std::time::Instant;

use wgnn::data::{self, Dataset};
use wgnn::distributed::{self, DistributedOptimizer, World};
use wgnn::metrics::Metric;
use wgnn::nn::{self, Linear, Module, Sequential};
use wgnn::optim::{Adam, AdamConfig, Optimizer};
use wgnn::train::{Callback, Control, FitConfig, Loss, Scores};
use wgnn::{Device, Result, Tensor};

#[path = "common/device.rs"]
mod device;

/// The seed's MLP trained data-parallel over MPI (run under mpirun): throughput, scaling and accuracy.
#[derive(Parser)]
#[command(name = "distributed_mnist")]
struct Args {
    #[command(flatten)]
    device: device::DeviceArg,
    /// A folder of standard IDX files (e.g. /usr/share/datasets/fashion-mnist) instead of the committed subset.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Training epochs.
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Rows per batch on each rank.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Exchange the gradients through MPI's all-gather even where the ranks share a
    /// host (by default they read each other's in a shared-memory window).
    #[arg(long = "no-shared-memory", action = clap::ArgAction::SetFalse)]
    shared_memory: bool,
    /// Skip the baseline run on rank 0 alone (and so the scaling efficiency).
    #[arg(long = "no-baseline", action = clap::ArgAction::SetFalse)]
    baseline: bool,
}

fn load(args: &Args) -> Result<(Dataset, Dataset, String)> {
    match &args.data {
        Some(dir) => Ok((
            data::load_idx_dir(dir, "train")?,
            data::load_idx_dir(dir, "t10k")?,
            dir.display().to_string(),
        )),
        None => {
            let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/mnist_5k.csv.gz");
            let (train, test) = data::load_mnist_csv_gz(&path)?.shuffle_split(0, 4000);
            Ok((train, test, "MNIST subset (4000 train / 1000 test)".into()))
        }
    }
}

fn mlp(dev: &Device) -> Sequential {
    Sequential::new()
        .add(Linear::new(784, 128, dev))
        .add(nn::Relu)
        .add(Linear::new(128, 10, dev))
}

/// Rank 0's line per epoch.
struct PrintEpoch;

impl Callback for PrintEpoch {
    fn on_epoch_end(&mut self, epoch: usize, logs: &Scores, _control: &mut Control<'_>) -> Result<()> {
        println!(
            "  epoch {}: loss {:.4}, accuracy {:.4}, {:.0} samples/s",
            epoch + 1,
            logs["loss"],
            logs["accuracy"],
            logs["samples_per_sec"]
        );
        Ok(())
    }
}

/// Trains for `epochs` with `opt`; returns the model and the last epoch's seconds
/// on this rank's clock.
fn train(
    net: Sequential,
    opt: impl Optimizer + 'static,
    (x, y): (&Tensor, &Tensor),
    batch: usize,
    epochs: usize,
    print: bool,
) -> Result<(wgnn::train::Model, f64)> {
    let mut model = net.compile(opt, Loss::CrossEntropy, &[Metric::Accuracy])?;
    let callbacks: Vec<Box<dyn Callback>> = if print { vec![Box::new(PrintEpoch)] } else { Vec::new() };
    let config = FitConfig {
        epochs,
        batch_size: batch,
        seed: Some(1),
        callbacks,
        verbose: false,
        layer_stats: false,
        ..Default::default()
    };
    let history = model.fit(x, y, config)?;
    // `samples_per_sec` is the rows of the whole data set over the epoch's time.
    let rate = *history
        .get("samples_per_sec")
        .and_then(<[f64]>::last)
        .expect("one epoch at least");
    Ok((model, x.shape()[0] as f64 / rate))
}

/// The CPUs the host has online (Linux's `/sys/devices/system/cpu/online`, e.g.
/// `0-1`), whatever this process is bound to; `None` where that cannot be read.
fn online_cpus() -> Option<usize> {
    let list = std::fs::read_to_string("/sys/devices/system/cpu/online").ok()?;
    list.trim()
        .split(',')
        .map(|range| match range.split_once('-') {
            Some((first, last)) => Some(last.parse::<usize>().ok()? + 1 - first.parse::<usize>().ok()?),
            None => range.parse::<usize>().ok().map(|_| 1),
        })
        .sum()
}

/// Seconds per all-reduce of `n` floats (the median of `reps`).
fn time_all_reduce(world: &World, n: usize, reps: usize) -> Result<f64> {
    let mut values = vec![1.0f32; n];
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let started = Instant::now();
        distributed::all_reduce_sum(world, &mut values)?;
        times.push(started.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[reps / 2])
}

fn run(world: &World, args: &Args) -> Result<()> {
    let (rank, ranks) = (world.rank(), world.size());
    let lead = rank == 0;
    world.set_shared_memory(args.shared_memory);
    let dev = args.device.open()?;
    let (train_set, test_set, name) = load(args)?;
    let info = dev.info();
    println!(
        "rank {rank} of {ranks} on {}: {} ({})",
        world.processor_name(),
        info.name,
        info.backend
    );
    world.barrier()?;
    if lead {
        println!(
            "data: {name}: {} train, {} test; batch {} per rank",
            train_set.n, test_set.n, args.batch
        );
    }

    // The all-reduce alone: the model's gradients (101 770 floats) and 16 Mi floats.
    let params = mlp(&dev).parameters().iter().map(Tensor::numel).sum::<usize>();
    for (n, reps) in [(params, 50), (1 << 24, 5)] {
        let seconds = time_all_reduce(world, n, reps)?;
        if lead && ranks > 1 {
            println!(
                "all-reduce of {n} floats over {ranks} ranks: {:.3} ms, {:.2} GB/s of gradient per rank",
                seconds * 1e3,
                (n * 4) as f64 / seconds / 1e9
            );
        }
    }

    let (x, y) = train_set.tensors(&dev)?;
    let mut single = None;
    let mut ceiling = None;
    if args.baseline && ranks > 1 {
        // `distributed::init` gave each rank its share of the host's cores; the
        // baseline runs alone, with all of them.
        let per_rank_threads = wgnn::get_num_threads();
        if lead {
            wgnn::set_num_threads(0);
            println!(
                "baseline: rank 0 alone, 2 epochs, {} thread(s)",
                wgnn::get_num_threads()
            );
            if let Some(online) = online_cpus().filter(|&cpus| cpus > wgnn::get_num_threads()) {
                println!(
                    "  (rank 0 may run on {} of the host's {online} CPUs: mpirun bound it to fewer; \
                     run mpirun with --bind-to none for a baseline on all of them)",
                    wgnn::get_num_threads()
                );
            }
            wgnn::manual_seed(0);
            let net = mlp(&dev);
            let opt = Adam::new(net.parameters(), AdamConfig::default());
            let (_, seconds) = train(net, opt, (&x, &y), args.batch, 2, true)?;
            single = Some(train_set.n as f64 / seconds);
            wgnn::set_num_threads(per_rank_threads);
        }
        world.barrier()?; // the other ranks sleep here meanwhile
                          // The machine's ceiling: every rank trains a model of its own at the same
                          // time, with its share of the cores and no collective between them.
        if lead {
            println!("ceiling: {ranks} independent runs at once, {per_rank_threads} thread(s) each, 2 epochs");
        }
        wgnn::manual_seed(rank as u64);
        let net = mlp(&dev);
        let opt = Adam::new(net.parameters(), AdamConfig::default());
        let (_, seconds) = train(net, opt, (&x, &y), args.batch, 2, false)?;
        let rates = distributed::all_gather(world, &[(train_set.n as f64 / seconds) as f32])?;
        ceiling = Some(rates.iter().map(|r| f64::from(r[0])).sum::<f64>());
    }

    if lead {
        println!("data-parallel: {ranks} ranks, {} epochs", args.epochs);
    }
    wgnn::manual_seed(rank as u64); // rank 0's initial weights are broadcast
    let net = mlp(&dev);
    let opt = DistributedOptimizer::new(Adam::new(net.parameters(), AdamConfig::default()), world.clone())?;
    let (model, seconds) = train(net, opt, (&x, &y), args.batch, args.epochs, lead)?;
    let shard_rows = (train_set.n / (args.batch * ranks)) * args.batch + (train_set.n % (args.batch * ranks)) / ranks;
    let per_rank = distributed::all_gather(world, &[(shard_rows as f64 / seconds) as f32])?;
    let (tx, ty) = test_set.tensors(&dev)?;
    let test = model.evaluate(&tx, &ty)?;
    if lead {
        for (r, rate) in per_rank.iter().enumerate() {
            println!("rank {r}: {:.0} samples/s (its shard, last epoch)", rate[0]);
        }
        let global: f64 = per_rank.iter().map(|r| f64::from(r[0])).sum();
        println!("global: {global:.0} samples/s over {ranks} ranks");
        if let Some(one) = single {
            println!("one rank alone: {one:.0} samples/s");
            if let Some(all) = ceiling {
                println!(
                    "ceiling: {ranks} independent runs, {all:.0} samples/s in all ({:.2}x one rank alone)",
                    all / one
                );
            }
            println!(
                "scaling efficiency 1 -> {ranks} ranks: {:.0}% (speed-up {:.2}x)",
                100.0 * global / (ranks as f64 * one),
                global / one
            );
        }
        println!("test accuracy {:.4}, test loss {:.4}", test["accuracy"], test["loss"]);
    }
    Ok(())
}

fn main() {
    let args = Args::parse();
    let world = match distributed::init() {
        Ok(world) => world,
        Err(e) => {
            eprintln!("distributed_mnist: {e}");
            std::process::exit(1)
        }
    };
    if let Err(e) = run(&world, &args) {
        world.abort(&e); // the other ranks would otherwise wait for this one forever
    }
}
