// partition-stages: one stage per layer, named by its weights' common prefix; ops that read a
// weight belong to its layer, other ops to the earliest stage that reads them; the vector-only
// `norm` layer joins the layer before it (with merge_vector_layers=false it stays alone).
// Input: the lowered model of README.md. compiler.opt adds `wse.placement`.

// RUN: compiler.opt --target mesh-8x8 --mode pipelined --pass partition-stages %s | filecheck %s
// RUN: compiler.opt --pass 'partition-stages{merge_vector_layers=false}' %s | filecheck %s --check-prefix=ALONE

// CHECK: module attributes {wse.placement = {grid = [8, 8], mode = "pipelined", target = "mesh-8x8", usable_sram_bytes_per_pe = 40960 : i64}, wse.stages = ["layers.0", "layers.1+norm"]}
// CHECK:      "wse.param"() {stage = 0 : i64, sym_name = "layers.0.weight"}
// CHECK-NEXT: "wse.param"() {stage = 0 : i64, sym_name = "layers.0.bias"}
// CHECK-NEXT: "wse.param"() {stage = 1 : i64, sym_name = "layers.1.weight"}
// CHECK-NEXT: "wse.param"() {stage = 1 : i64, sym_name = "layers.1.bias"}
// CHECK-NEXT: "wse.param"() {stage = 1 : i64, sym_name = "norm.weight"}
// CHECK-NEXT: "wse.param"() {stage = 1 : i64, sym_name = "norm.bias"}
// CHECK-NEXT: "wse.transpose"({{.*}}stage = 0 : i64
// CHECK-NEXT: "wse.matmul"(%arg0, {{.*}}stage = 0 : i64
// The tanh between the layers runs where its result is read:
// CHECK-NEXT: "wse.tanh"({{.*}}stage = 1 : i64
// CHECK-NEXT: "wse.transpose"({{.*}}stage = 1 : i64
// CHECK-NEXT: "wse.matmul"({{.*}}stage = 1 : i64
// CHECK-NEXT: "wse.tanh"({{.*}}stage = 1 : i64
// CHECK-NEXT: "wse.layer_norm"({{.*}}stage = 1 : i64

// ALONE: wse.stages = ["layers.0", "layers.1", "norm"]
// ALONE: "wse.param"() {stage = 2 : i64, sym_name = "norm.weight"}
// ALONE: "wse.matmul"({{.*}}stage = 1 : i64
// ALONE-NEXT: "wse.tanh"({{.*}}stage = 2 : i64
// ALONE-NEXT: "wse.layer_norm"({{.*}}stage = 2 : i64

module {
  func.func @forward(%arg0: tensor<1x24xf32>) -> tensor<1x16xf32> {
    %0 = "wse.param"() {sym_name = "layers.0.weight"} : () -> tensor<40x24xf32>
    %1 = "wse.param"() {sym_name = "layers.0.bias"} : () -> tensor<40xf32>
    %2 = "wse.param"() {sym_name = "layers.1.weight"} : () -> tensor<16x40xf32>
    %3 = "wse.param"() {sym_name = "layers.1.bias"} : () -> tensor<16xf32>
    %4 = "wse.param"() {sym_name = "norm.weight"} : () -> tensor<16xf32>
    %5 = "wse.param"() {sym_name = "norm.bias"} : () -> tensor<16xf32>
    %6 = "wse.transpose"(%0) {permutation = [1, 0]} : (tensor<40x24xf32>) -> tensor<24x40xf32>
    %7 = "wse.matmul"(%arg0, %6, %1) {operandSegmentSizes = array<i32: 1, 1, 1>} : (tensor<1x24xf32>, tensor<24x40xf32>, tensor<40xf32>) -> tensor<1x40xf32>
    %8 = "wse.tanh"(%7) : (tensor<1x40xf32>) -> tensor<1x40xf32>
    %9 = "wse.transpose"(%2) {permutation = [1, 0]} : (tensor<16x40xf32>) -> tensor<40x16xf32>
    %10 = "wse.matmul"(%8, %9, %3) {operandSegmentSizes = array<i32: 1, 1, 1>} : (tensor<1x40xf32>, tensor<40x16xf32>, tensor<16xf32>) -> tensor<1x16xf32>
    %11 = "wse.tanh"(%10) : (tensor<1x16xf32>) -> tensor<1x16xf32>
    %12 = "wse.layer_norm"(%11, %4, %5) {axes = 1 : i64, eps = 1.000000e-05 : f64, operandSegmentSizes = array<i32: 1, 1, 1>} : (tensor<1x16xf32>, tensor<16xf32>, tensor<16xf32>) -> tensor<1x16xf32>
    return %12 : tensor<1x16xf32>
  }
}
