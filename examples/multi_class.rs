//! Several classes in one image (keras-vis's `filter_indices=[1, 7]`): a "cat-fish",
//! tabby cat (281) plus goldfish (1), maximized together.
//! `cargo run --release -p actmax --example multi_class`
#[path = "common.rs"]
mod common;

use actmax::{images, visualize_activation, Options};

fn main() -> actmax::Result<()> {
    let model = common::efficientnet();
    let vis = visualize_activation(&model, -1, Some(vec![281, 1]), Options::default())?;
    images::save(&vis.image(0)?, &common::out("catfish.png"))?;
    let logits = model.predict(&vis.images)?;
    println!(
        "tabby logit {:.2}, goldfish logit {:.2}, top-1 {:?}",
        logits[[0, 281]],
        logits[[0, 1]],
        common::top1(&model, &vis.images)
    );
    Ok(())
}
