// layout-regions: pipelined stages get disjoint rectangles of the grid (a snake of bands; one
// band here, or two with bands=2), each op its stage's rectangle or, for a matmul on a weight,
// the weight's own sub-rectangle; broadcast dataflow, or Cannon on a square rectangle for a
// GEMM (more than one row) whose rectangle is square enough. Streaming: all of it is the grid.
// Inputs: partition-stages output (1 row pipelined, 1 row streaming, 8 rows pipelined).

// RUN: compiler.opt --split-input-file --pass layout-regions %s | filecheck %s
// RUN: compiler.opt --split-input-file --pass 'layout-regions{bands=2}' %s | filecheck %s --check-prefix=BANDS
// RUN: compiler.opt --split-input-file --pass 'layout-regions{cannon_min_aspect=0.5}' %s | filecheck %s --check-prefix=CANNON

// CHECK: mode = "pipelined"{{.*}}wse.stage_regions = {{\[\[}}0, 0, 4, 8], [4, 0, 4, 8]]
// CHECK:      "wse.transpose"({{.*}}region = [0, 0, 4, 8], stage = 0
// CHECK-NEXT: "wse.matmul"({{.*}}dataflow = "broadcast"{{.*}}region = [0, 0, 4, 8], stage = 0
// CHECK-NEXT: "wse.tanh"({{.*}}region = [4, 0, 4, 8], stage = 1
// CHECK:      "wse.layer_norm"({{.*}}region = [4, 0, 4, 8], stage = 1
// CHECK: // -----
// CHECK: mode = "streaming"{{.*}}wse.stage_regions = {{\[\[}}0, 0, 8, 8], [0, 0, 8, 8]]
// CHECK-COUNT-2: "wse.matmul"({{.*}}dataflow = "broadcast"{{.*}}region = [0, 0, 8, 8]
// CHECK:      "wse.layer_norm"({{.*}}region = [0, 0, 8, 8], stage = 1
// CHECK: // -----
// CHECK: mode = "pipelined"
// CHECK: "wse.matmul"({{.*}}dataflow = "broadcast"{{.*}}region = [0, 0, 4, 8]
// CHECK: "wse.matmul"({{.*}}dataflow = "broadcast"{{.*}}region = [4, 0, 4, 8]

// BANDS: wse.stage_regions = {{\[\[}}0, 0, 8, 4], [0, 4, 8, 4]]
// BANDS: "wse.matmul"({{.*}}region = [0, 0, 8, 4], stage = 0
// BANDS: "wse.matmul"({{.*}}region = [0, 4, 8, 4], stage = 1

// CANNON:      "wse.matmul"(%arg0, {{.*}}dataflow = "broadcast"{{.*}}-> tensor<1x40xf32>
// CANNON:      // -----
// CANNON:      // -----
// CANNON:      "wse.transpose"({{.*}}region = [0, 0, 4, 4], stage = 0
// CANNON-NEXT: "wse.matmul"(%arg0, {{.*}}dataflow = "cannon"{{.*}}region = [0, 0, 4, 4], stage = 0
// CANNON-NEXT: "wse.tanh"({{.*}}region = [4, 0, 4, 8], stage = 1
// CANNON-NEXT: "wse.transpose"({{.*}}region = [4, 0, 4, 4], stage = 1
// CANNON-NEXT: "wse.matmul"({{.*}}dataflow = "cannon"{{.*}}region = [4, 0, 4, 4], stage = 1

module attributes {wse.placement = {grid = [8, 8], mode = "pipelined", target = "mesh-8x8", usable_sram_bytes_per_pe = 40960 : i64}, wse.stages = ["layers.0", "layers.1+norm"]} {
  func.func @forward(%arg0: tensor<1x24xf32>) -> tensor<1x16xf32> {
    %0 = "wse.param"() {stage = 0 : i64, sym_name = "layers.0.weight"} : () -> tensor<40x24xf32>
    %1 = "wse.param"() {stage = 0 : i64, sym_name = "layers.0.bias"} : () -> tensor<40xf32>
    %2 = "wse.param"() {stage = 1 : i64, sym_name = "layers.1.weight"} : () -> tensor<16x40xf32>
    %3 = "wse.param"() {stage = 1 : i64, sym_name = "layers.1.bias"} : () -> tensor<16xf32>
    %4 = "wse.param"() {stage = 1 : i64, sym_name = "norm.weight"} : () -> tensor<16xf32>
    %5 = "wse.param"() {stage = 1 : i64, sym_name = "norm.bias"} : () -> tensor<16xf32>
    %6 = "wse.transpose"(%0) {permutation = [1, 0], stage = 0 : i64} : (tensor<40x24xf32>) -> tensor<24x40xf32>
    %7 = "wse.matmul"(%arg0, %6, %1) {operandSegmentSizes = array<i32: 1, 1, 1>, stage = 0 : i64} : (tensor<1x24xf32>, tensor<24x40xf32>, tensor<40xf32>) -> tensor<1x40xf32>
    %8 = "wse.tanh"(%7) {stage = 1 : i64} : (tensor<1x40xf32>) -> tensor<1x40xf32>
    %9 = "wse.transpose"(%2) {permutation = [1, 0], stage = 1 : i64} : (tensor<16x40xf32>) -> tensor<40x16xf32>
    %10 = "wse.matmul"(%8, %9, %3) {operandSegmentSizes = array<i32: 1, 1, 1>, stage = 1 : i64} : (tensor<1x40xf32>, tensor<40x16xf32>, tensor<16xf32>) -> tensor<1x16xf32>
    %11 = "wse.tanh"(%10) {stage = 1 : i64} : (tensor<1x16xf32>) -> tensor<1x16xf32>
    %12 = "wse.layer_norm"(%11, %4, %5) {axes = 1 : i64, eps = 1.000000e-05 : f64, operandSegmentSizes = array<i32: 1, 1, 1>, stage = 1 : i64} : (tensor<1x16xf32>, tensor<16xf32>, tensor<16xf32>) -> tensor<1x16xf32>
    return %12 : tensor<1x16xf32>
  }
}

// -----

module attributes {wse.placement = {grid = [8, 8], mode = "streaming", target = "mesh-8x8", usable_sram_bytes_per_pe = 40960 : i64}, wse.stages = ["layers.0", "layers.1+norm"]} {
  func.func @forward(%arg0: tensor<1x24xf32>) -> tensor<1x16xf32> {
    %0 = "wse.param"() {stage = 0 : i64, sym_name = "layers.0.weight"} : () -> tensor<40x24xf32>
    %1 = "wse.param"() {stage = 0 : i64, sym_name = "layers.0.bias"} : () -> tensor<40xf32>
    %2 = "wse.param"() {stage = 1 : i64, sym_name = "layers.1.weight"} : () -> tensor<16x40xf32>
    %3 = "wse.param"() {stage = 1 : i64, sym_name = "layers.1.bias"} : () -> tensor<16xf32>
    %4 = "wse.param"() {stage = 1 : i64, sym_name = "norm.weight"} : () -> tensor<16xf32>
    %5 = "wse.param"() {stage = 1 : i64, sym_name = "norm.bias"} : () -> tensor<16xf32>
    %6 = "wse.transpose"(%0) {permutation = [1, 0], stage = 0 : i64} : (tensor<40x24xf32>) -> tensor<24x40xf32>
    %7 = "wse.matmul"(%arg0, %6, %1) {operandSegmentSizes = array<i32: 1, 1, 1>, stage = 0 : i64} : (tensor<1x24xf32>, tensor<24x40xf32>, tensor<40xf32>) -> tensor<1x40xf32>
    %8 = "wse.tanh"(%7) {stage = 1 : i64} : (tensor<1x40xf32>) -> tensor<1x40xf32>
    %9 = "wse.transpose"(%2) {permutation = [1, 0], stage = 1 : i64} : (tensor<16x40xf32>) -> tensor<40x16xf32>
    %10 = "wse.matmul"(%8, %9, %3) {operandSegmentSizes = array<i32: 1, 1, 1>, stage = 1 : i64} : (tensor<1x40xf32>, tensor<40x16xf32>, tensor<16xf32>) -> tensor<1x16xf32>
    %11 = "wse.tanh"(%10) {stage = 1 : i64} : (tensor<1x16xf32>) -> tensor<1x16xf32>
    %12 = "wse.layer_norm"(%11, %4, %5) {axes = 1 : i64, eps = 1.000000e-05 : f64, operandSegmentSizes = array<i32: 1, 1, 1>, stage = 1 : i64} : (tensor<1x16xf32>, tensor<16xf32>, tensor<16xf32>) -> tensor<1x16xf32>
    return %12 : tensor<1x16xf32>
  }
}

// -----

module attributes {wse.placement = {grid = [8, 8], mode = "pipelined", target = "mesh-8x8", usable_sram_bytes_per_pe = 40960 : i64}, wse.stages = ["layers.0", "layers.1+norm"]} {
  func.func @forward(%arg0: tensor<8x24xf32>) -> tensor<8x16xf32> {
    %0 = "wse.param"() {stage = 0 : i64, sym_name = "layers.0.weight"} : () -> tensor<40x24xf32>
    %1 = "wse.param"() {stage = 0 : i64, sym_name = "layers.0.bias"} : () -> tensor<40xf32>
    %2 = "wse.param"() {stage = 1 : i64, sym_name = "layers.1.weight"} : () -> tensor<16x40xf32>
    %3 = "wse.param"() {stage = 1 : i64, sym_name = "layers.1.bias"} : () -> tensor<16xf32>
    %4 = "wse.param"() {stage = 1 : i64, sym_name = "norm.weight"} : () -> tensor<16xf32>
    %5 = "wse.param"() {stage = 1 : i64, sym_name = "norm.bias"} : () -> tensor<16xf32>
    %6 = "wse.transpose"(%0) {permutation = [1, 0], stage = 0 : i64} : (tensor<40x24xf32>) -> tensor<24x40xf32>
    %7 = "wse.matmul"(%arg0, %6, %1) {operandSegmentSizes = array<i32: 1, 1, 1>, stage = 0 : i64} : (tensor<8x24xf32>, tensor<24x40xf32>, tensor<40xf32>) -> tensor<8x40xf32>
    %8 = "wse.tanh"(%7) {stage = 1 : i64} : (tensor<8x40xf32>) -> tensor<8x40xf32>
    %9 = "wse.transpose"(%2) {permutation = [1, 0], stage = 1 : i64} : (tensor<16x40xf32>) -> tensor<40x16xf32>
    %10 = "wse.matmul"(%8, %9, %3) {operandSegmentSizes = array<i32: 1, 1, 1>, stage = 1 : i64} : (tensor<8x40xf32>, tensor<40x16xf32>, tensor<16xf32>) -> tensor<8x16xf32>
    %11 = "wse.tanh"(%10) {stage = 1 : i64} : (tensor<8x16xf32>) -> tensor<8x16xf32>
    %12 = "wse.layer_norm"(%11, %4, %5) {axes = 1 : i64, eps = 1.000000e-05 : f64, operandSegmentSizes = array<i32: 1, 1, 1>, stage = 1 : i64} : (tensor<8x16xf32>, tensor<16xf32>, tensor<16xf32>) -> tensor<8x16xf32>
    return %12 : tensor<8x16xf32>
  }
}
