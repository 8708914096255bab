// split-matmuls: a matmul on tiled weights becomes explicit fabric traffic. Broadcast (GEMV):
// the activation's K slices go along the PE rows, each PE multiplies by its tile (one partial
// sum per PE row) and the partials are summed down the columns: "tree" for 8 rows by default,
// or the algorithm the options ask for. Cannon (GEMM): activation blocks shift along the rows
// over the resident tiles; no reduction.
// Inputs: tile-weights output (1 row, broadcast; 8 rows, Cannon).

// RUN: compiler.opt --split-input-file --pass split-matmuls %s | filecheck %s
// RUN: compiler.opt --split-input-file --pass 'split-matmuls{reduce_algorithm=chain}' %s | filecheck %s --check-prefix=CHAIN
// RUN: compiler.opt --split-input-file --pass 'split-matmuls{reduce_algorithm=two_phase two_phase_group=2}' %s | filecheck %s --check-prefix=TWO

// CHECK:      %[[WT:.*]] = "wse.weight_tiles"({{.*}}tile_grid = [8, 4], tile_shape = [10, 3]}
// CHECK:      %[[BT:.*]] = "wse.weight_tiles"({{.*}}tile_grid = [1, 4], tile_shape = [10]}
// CHECK-NOT:  "wse.matmul"
// CHECK:      %[[X:.*]] = "wse.fabric_broadcast"(%arg0) {axis = "row", dim = 1 : i64, parts = [[P:8]] : i64, region = [0, 0, 4, 8], rows_per_pass = 1 : i64, stage = 0 : i64}
// CHECK-NEXT: %[[PS:.*]] = "wse.tile_matmul"(%[[X]], %[[WT]], %[[BT]]) {dataflow = "broadcast"{{.*}}transpose_rhs = true}
// CHECK-SAME: -> tensor<[[P]]x1x40xf32>
// CHECK-NEXT: "wse.fabric_reduce"(%[[PS]]) {algorithm = "tree", axis = "col", group = 1 : i64, region = [0, 0, 4, 8], stage = 0 : i64} : (tensor<8x1x40xf32>) -> tensor<1x40xf32>
// CHECK-NEXT: "wse.tanh"
// CHECK-NEXT: "wse.fabric_broadcast"({{.*}}region = [4, 0, 4, 8]
// CHECK-NEXT: "wse.tile_matmul"({{.*}}-> tensor<8x1x16xf32>
// CHECK-NEXT: "wse.fabric_reduce"({{.*}}algorithm = "tree"{{.*}}-> tensor<1x16xf32>
// CHECK-NOT:  "wse.matmul"
// CHECK:      // -----
// CHECK-NOT:  "wse.matmul"
// CHECK:      %[[S:.*]] = "wse.fabric_shift"(%arg0) {axis = "row", region = [0, 0, 4, 4], skew = 1 : i64, stage = 0 : i64, step = 1 : i64, steps = 4 : i64}
// CHECK-NEXT: "wse.tile_matmul"(%[[S]], {{.*}}dataflow = "cannon"{{.*}}-> tensor<8x40xf32>
// CHECK-NEXT: "wse.tanh"
// CHECK-NEXT: "wse.fabric_shift"({{.*}}region = [4, 0, 4, 4]
// CHECK-NEXT: "wse.tile_matmul"({{.*}}dataflow = "cannon"{{.*}}-> tensor<8x16xf32>
// CHECK-NEXT: "wse.tanh"
// CHECK-NEXT: "wse.layer_norm"

// CHAIN-COUNT-2: "wse.fabric_reduce"({{.*}}algorithm = "chain", axis = "col", group = 1 : i64

// TWO-COUNT-2: "wse.fabric_reduce"({{.*}}algorithm = "two_phase", axis = "col", group = 2 : i64

module attributes {wse.placement = {grid = [8, 8], mode = "pipelined", target = "mesh-8x8", usable_sram_bytes_per_pe = 40960 : i64}, wse.stage_regions = [[0, 0, 4, 8], [4, 0, 4, 8]], wse.stages = ["layers.0", "layers.1+norm"]} {
  func.func @forward(%arg0: tensor<1x24xf32>) -> tensor<1x16xf32> {
    %0 = "wse.param"() {stage = 0 : i64, sym_name = "layers.0.weight"} : () -> tensor<40x24xf32>
    %1 = "wse.weight_tiles"(%0) {home = "sram", region = [0, 0, 4, 8], sram_offset = 0 : i64, stage = 0 : i64, tile_dims = [1, 0], tile_grid = [8, 4], tile_shape = [10, 3]} : (tensor<40x24xf32>) -> tensor<40x24xf32>
    %2 = "wse.param"() {stage = 0 : i64, sym_name = "layers.0.bias"} : () -> tensor<40xf32>
    %3 = "wse.weight_tiles"(%2) {home = "sram", region = [0, 0, 4, 1], sram_offset = 0 : i64, stage = 0 : i64, tile_dims = [-1, 0], tile_grid = [1, 4], tile_shape = [10]} : (tensor<40xf32>) -> tensor<40xf32>
    %4 = "wse.param"() {stage = 1 : i64, sym_name = "layers.1.weight"} : () -> tensor<16x40xf32>
    %5 = "wse.weight_tiles"(%4) {home = "sram", region = [4, 0, 4, 8], sram_offset = 0 : i64, stage = 1 : i64, tile_dims = [1, 0], tile_grid = [8, 4], tile_shape = [4, 5]} : (tensor<16x40xf32>) -> tensor<16x40xf32>
    %6 = "wse.param"() {stage = 1 : i64, sym_name = "layers.1.bias"} : () -> tensor<16xf32>
    %7 = "wse.weight_tiles"(%6) {home = "sram", region = [4, 0, 4, 1], sram_offset = 0 : i64, stage = 1 : i64, tile_dims = [-1, 0], tile_grid = [1, 4], tile_shape = [4]} : (tensor<16xf32>) -> tensor<16xf32>
    %8 = "wse.param"() {stage = 1 : i64, sym_name = "norm.weight"} : () -> tensor<16xf32>
    %9 = "wse.weight_tiles"(%8) {home = "sram", region = [4, 0, 4, 1], sram_offset = 0 : i64, stage = 1 : i64, tile_dims = [-1, 0], tile_grid = [1, 4], tile_shape = [4]} : (tensor<16xf32>) -> tensor<16xf32>
    %10 = "wse.param"() {stage = 1 : i64, sym_name = "norm.bias"} : () -> tensor<16xf32>
    %11 = "wse.weight_tiles"(%10) {home = "sram", region = [4, 0, 4, 1], sram_offset = 0 : i64, stage = 1 : i64, tile_dims = [-1, 0], tile_grid = [1, 4], tile_shape = [4]} : (tensor<16xf32>) -> tensor<16xf32>
    %12 = "wse.transpose"(%1) {permutation = [1, 0], region = [0, 0, 4, 8], stage = 0 : i64} : (tensor<40x24xf32>) -> tensor<24x40xf32>
    %13 = "wse.matmul"(%arg0, %12, %3) {dataflow = "broadcast", operandSegmentSizes = array<i32: 1, 1, 1>, region = [0, 0, 4, 8], stage = 0 : i64} : (tensor<1x24xf32>, tensor<24x40xf32>, tensor<40xf32>) -> tensor<1x40xf32>
    %14 = "wse.tanh"(%13) {region = [4, 0, 4, 8], stage = 1 : i64} : (tensor<1x40xf32>) -> tensor<1x40xf32>
    %15 = "wse.transpose"(%5) {permutation = [1, 0], region = [4, 0, 4, 8], stage = 1 : i64} : (tensor<16x40xf32>) -> tensor<40x16xf32>
    %16 = "wse.matmul"(%14, %15, %7) {dataflow = "broadcast", operandSegmentSizes = array<i32: 1, 1, 1>, region = [4, 0, 4, 8], stage = 1 : i64} : (tensor<1x40xf32>, tensor<40x16xf32>, tensor<16xf32>) -> tensor<1x16xf32>
    %17 = "wse.tanh"(%16) {region = [4, 0, 4, 8], stage = 1 : i64} : (tensor<1x16xf32>) -> tensor<1x16xf32>
    %18 = "wse.layer_norm"(%17, %9, %11) {axes = 1 : i64, eps = 1.000000e-05 : f64, operandSegmentSizes = array<i32: 1, 1, 1>, region = [4, 0, 4, 8], stage = 1 : i64} : (tensor<1x16xf32>, tensor<16xf32>, tensor<16xf32>) -> tensor<1x16xf32>
    return %18 : tensor<1x16xf32>
  }
}

// -----

module attributes {wse.placement = {grid = [8, 8], mode = "pipelined", target = "mesh-8x8", usable_sram_bytes_per_pe = 40960 : i64}, wse.stage_regions = [[0, 0, 4, 8], [4, 0, 4, 8]], wse.stages = ["layers.0", "layers.1+norm"]} {
  func.func @forward(%arg0: tensor<8x24xf32>) -> tensor<8x16xf32> {
    %0 = "wse.param"() {stage = 0 : i64, sym_name = "layers.0.weight"} : () -> tensor<40x24xf32>
    %1 = "wse.weight_tiles"(%0) {home = "sram", region = [0, 0, 4, 4], sram_offset = 0 : i64, stage = 0 : i64, tile_dims = [1, 0], tile_grid = [4, 4], tile_shape = [10, 6]} : (tensor<40x24xf32>) -> tensor<40x24xf32>
    %2 = "wse.param"() {stage = 0 : i64, sym_name = "layers.0.bias"} : () -> tensor<40xf32>
    %3 = "wse.weight_tiles"(%2) {home = "sram", region = [0, 0, 4, 1], sram_offset = 0 : i64, stage = 0 : i64, tile_dims = [-1, 0], tile_grid = [1, 4], tile_shape = [10]} : (tensor<40xf32>) -> tensor<40xf32>
    %4 = "wse.param"() {stage = 1 : i64, sym_name = "layers.1.weight"} : () -> tensor<16x40xf32>
    %5 = "wse.weight_tiles"(%4) {home = "sram", region = [4, 0, 4, 4], sram_offset = 0 : i64, stage = 1 : i64, tile_dims = [1, 0], tile_grid = [4, 4], tile_shape = [4, 10]} : (tensor<16x40xf32>) -> tensor<16x40xf32>
    %6 = "wse.param"() {stage = 1 : i64, sym_name = "layers.1.bias"} : () -> tensor<16xf32>
    %7 = "wse.weight_tiles"(%6) {home = "sram", region = [4, 0, 4, 1], sram_offset = 0 : i64, stage = 1 : i64, tile_dims = [-1, 0], tile_grid = [1, 4], tile_shape = [4]} : (tensor<16xf32>) -> tensor<16xf32>
    %8 = "wse.param"() {stage = 1 : i64, sym_name = "norm.weight"} : () -> tensor<16xf32>
    %9 = "wse.weight_tiles"(%8) {home = "sram", region = [4, 0, 4, 1], sram_offset = 0 : i64, stage = 1 : i64, tile_dims = [-1, 0], tile_grid = [1, 4], tile_shape = [4]} : (tensor<16xf32>) -> tensor<16xf32>
    %10 = "wse.param"() {stage = 1 : i64, sym_name = "norm.bias"} : () -> tensor<16xf32>
    %11 = "wse.weight_tiles"(%10) {home = "sram", region = [4, 0, 4, 1], sram_offset = 0 : i64, stage = 1 : i64, tile_dims = [-1, 0], tile_grid = [1, 4], tile_shape = [4]} : (tensor<16xf32>) -> tensor<16xf32>
    %12 = "wse.transpose"(%1) {permutation = [1, 0], region = [0, 0, 4, 4], stage = 0 : i64} : (tensor<40x24xf32>) -> tensor<24x40xf32>
    %13 = "wse.matmul"(%arg0, %12, %3) {dataflow = "cannon", operandSegmentSizes = array<i32: 1, 1, 1>, region = [0, 0, 4, 4], stage = 0 : i64} : (tensor<8x24xf32>, tensor<24x40xf32>, tensor<40xf32>) -> tensor<8x40xf32>
    %14 = "wse.tanh"(%13) {region = [4, 0, 4, 8], stage = 1 : i64} : (tensor<8x40xf32>) -> tensor<8x40xf32>
    %15 = "wse.transpose"(%5) {permutation = [1, 0], region = [4, 0, 4, 4], stage = 1 : i64} : (tensor<16x40xf32>) -> tensor<40x16xf32>
    %16 = "wse.matmul"(%14, %15, %7) {dataflow = "cannon", operandSegmentSizes = array<i32: 1, 1, 1>, region = [4, 0, 4, 4], stage = 1 : i64} : (tensor<8x40xf32>, tensor<40x16xf32>, tensor<16xf32>) -> tensor<8x16xf32>
    %17 = "wse.tanh"(%16) {region = [4, 0, 4, 8], stage = 1 : i64} : (tensor<8x16xf32>) -> tensor<8x16xf32>
    %18 = "wse.layer_norm"(%17, %9, %11) {axes = 1 : i64, eps = 1.000000e-05 : f64, operandSegmentSizes = array<i32: 1, 1, 1>, region = [4, 0, 4, 8], stage = 1 : i64} : (tensor<8x16xf32>, tensor<16xf32>, tensor<16xf32>) -> tensor<8x16xf32>
    return %18 : tensor<8x16xf32>
  }
}
