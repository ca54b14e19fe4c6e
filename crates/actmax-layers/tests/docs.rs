//! The README's lists of what the importers read come from the same tables as the
//! importers themselves: a row added to a table without a word in the README fails here.

use actmax_layers::loaders::{keras, onnx};

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap()
}

fn mentions(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(i, _)| {
        let before = text[..i].chars().next_back().is_none_or(|c| !c.is_alphanumeric());
        let after = text[i + word.len()..].chars().next().is_none_or(|c| !c.is_alphanumeric());
        before && after
    })
}

#[test]
fn the_readme_names_every_onnx_op_and_keras_class_the_importers_read() {
    let text = readme();
    let ops: Vec<&str> = onnx::supported_ops().collect();
    let classes: Vec<&str> = keras::supported_layers().collect();
    assert!(ops.len() >= 50 && classes.len() >= 20, "{} ops, {} classes", ops.len(), classes.len());
    let missing: Vec<&&str> = ops.iter().chain(&classes).filter(|w| !mentions(&text, w)).collect();
    assert!(missing.is_empty(), "README.md does not name {missing:?}");
}

#[test]
fn an_unknown_op_is_refused_with_the_table_as_the_list() {
    // A one-node graph whose op is `Where`: the error lists what is read, from the table.
    let err = onnx::from_bytes(&where_model(), None).unwrap_err().to_string();
    assert!(err.contains("`Where`") && err.contains("Conv, Gemm, MatMul"), "{err}");
    assert!(onnx::supported_ops().all(|op| err.contains(op)), "{err}");
}

/// A minimal ONNX ModelProto (hand-encoded protobuf): opset 13, input `x` [1, 1, 2, 2]
/// float, one node `Where(x) -> y`, output `y`.
fn where_model() -> Vec<u8> {
    fn field(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag, body.len() as u8];
        out.extend_from_slice(body);
        out
    }
    let dim = |v: u8| field(0x0a, &[0x08, v]); // Dimension { dim_value }
    let shape: Vec<u8> = [1, 1, 2, 2].iter().flat_map(|&d| dim(d)).collect();
    let tensor_type = [vec![0x08, 0x01], field(0x12, &shape)].concat(); // elem_type FLOAT, shape
    let type_proto = field(0x0a, &tensor_type); // TypeProto.tensor_type
    let value_info = |name: &[u8]| [field(0x0a, name), field(0x12, &type_proto)].concat();
    let node = [field(0x0a, b"x"), field(0x12, b"y"), field(0x22, b"Where")].concat();
    let graph = [field(0x0a, &node), field(0x5a, &value_info(b"x")), field(0x62, &value_info(b"y"))].concat();
    let opset = [vec![0x10, 13]].concat(); // OperatorSetIdProto.version
    [vec![0x08, 0x07], field(0x3a, &graph), field(0x42, &opset)].concat()
}
