//! A custom research loss through `visualize_activation_with_losses`: lucid's objectives
//! composed — a class channel, minus an L1 pull toward mid-grey, plus total variation — with
//! lucid's robustness transforms and Adam.
//! `cargo run --release -p actmax --example custom_loss`
#[path = "common.rs"]
mod common;

use actmax::{images, visualize_activation_with_losses, Optimizer, Options};
use actmax_losses::{lucid, WeightedLosses};
use actmax_modifiers::TransformSet;

fn main() -> actmax::Result<()> {
    let mut model = common::efficientnet();
    model.swap_activation(-1, actmax_layers::Activation::Linear)?;
    let objective =
        lucid::channel("_fc", 94) + 1e-6 * lucid::l1("input", 127.0) + 1e-5 * lucid::total_variation("input");
    println!("objective: {}", actmax_losses::Loss::name(&objective));
    let losses = WeightedLosses::new().with(objective, 1.0);
    let opts = Options {
        transforms: TransformSet::lucid_standard(),
        optimizer: Optimizer::Adam(2.0),
        max_iter: 150,
        ..Options::default()
    };
    let vis = visualize_activation_with_losses(&model, &losses, opts)?;
    images::save(&vis.image(0)?, &common::out("custom_hummingbird.png"))?;
    println!("model says {:?}", common::top1(&model, &vis.images));
    Ok(())
}
