// insert-streams: a value read in a later stage crosses with a `wse.fabric_stream` (pipelined
// only); inputs enter and results leave through `wse.host_transfer` on the stage that reads or
// makes them. A result after the first, with the type of an input, is state (kind "state").
// Inputs: split-matmuls output (1 row pipelined, 1 row streaming); a function with state.

// RUN: compiler.opt --split-input-file --pass insert-streams %s | filecheck %s

// CHECK:      %[[IN:.*]] = "wse.host_transfer"(%arg0) {direction = "in", kind = "data", region = [0, 0, 4, 8], stage = 0 : i64} : (tensor<1x24xf32>) -> tensor<1x24xf32>
// CHECK-NEXT: "wse.fabric_broadcast"(%[[IN]])
// CHECK:      %[[R:.*]] = "wse.fabric_reduce"({{.*}}region = [0, 0, 4, 8], stage = 0
// CHECK-NEXT: %[[S:.*]] = "wse.fabric_stream"(%[[R]]) {hops = 4 : i64, region = [4, 0, 4, 8], src_region = [0, 0, 4, 8], stage = 1 : i64} : (tensor<1x40xf32>) -> tensor<1x40xf32>
// CHECK-NEXT: "wse.tanh"(%[[S]])
// CHECK-NOT:  "wse.fabric_stream"
// CHECK:      %[[Y:.*]] = "wse.layer_norm"
// CHECK-NEXT: %[[OUT:.*]] = "wse.host_transfer"(%[[Y]]) {direction = "out", kind = "data", region = [4, 0, 4, 8], stage = 1 : i64}
// CHECK-NEXT: return %[[OUT]]
// CHECK:      // -----
// CHECK:      "wse.host_transfer"(%arg0) {direction = "in", kind = "data", region = [0, 0, 8, 8], stage = 0
// CHECK-NOT:  "wse.fabric_stream"
// CHECK:      "wse.host_transfer"({{.*}}direction = "out", kind = "data", region = [0, 0, 8, 8], stage = 1
// CHECK:      // -----
// CHECK:      "wse.host_transfer"(%arg0) {direction = "in", kind = "data"
// CHECK:      "wse.host_transfer"(%arg1) {direction = "in", kind = "state"
// CHECK:      %[[Y0:.*]] = "wse.host_transfer"({{.*}}direction = "out", kind = "data"
// CHECK-NEXT: %[[Y1:.*]] = "wse.host_transfer"({{.*}}direction = "out", kind = "state"
// CHECK-NEXT: return %[[Y0]], %[[Y1]]

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
    %12 = "wse.fabric_broadcast"(%arg0) {axis = "row", dim = 1 : i64, parts = 8 : i64, region = [0, 0, 4, 8], rows_per_pass = 1 : i64, stage = 0 : i64} : (tensor<1x24xf32>) -> tensor<1x24xf32>
    %13 = "wse.tile_matmul"(%12, %1, %3) {dataflow = "broadcast", operandSegmentSizes = array<i32: 1, 1, 1>, region = [0, 0, 4, 8], rows_per_pass = 1 : i64, stage = 0 : i64, transpose_rhs = true} : (tensor<1x24xf32>, tensor<40x24xf32>, tensor<40xf32>) -> tensor<8x1x40xf32>
    %14 = "wse.fabric_reduce"(%13) {algorithm = "tree", axis = "col", group = 1 : i64, region = [0, 0, 4, 8], stage = 0 : i64} : (tensor<8x1x40xf32>) -> tensor<1x40xf32>
    %15 = "wse.tanh"(%14) {region = [4, 0, 4, 8], stage = 1 : i64} : (tensor<1x40xf32>) -> tensor<1x40xf32>
    %16 = "wse.fabric_broadcast"(%15) {axis = "row", dim = 1 : i64, parts = 8 : i64, region = [4, 0, 4, 8], rows_per_pass = 1 : i64, stage = 1 : i64} : (tensor<1x40xf32>) -> tensor<1x40xf32>
    %17 = "wse.tile_matmul"(%16, %5, %7) {dataflow = "broadcast", operandSegmentSizes = array<i32: 1, 1, 1>, region = [4, 0, 4, 8], rows_per_pass = 1 : i64, stage = 1 : i64, transpose_rhs = true} : (tensor<1x40xf32>, tensor<16x40xf32>, tensor<16xf32>) -> tensor<8x1x16xf32>
    %18 = "wse.fabric_reduce"(%17) {algorithm = "tree", axis = "col", group = 1 : i64, region = [4, 0, 4, 8], stage = 1 : i64} : (tensor<8x1x16xf32>) -> tensor<1x16xf32>
    %19 = "wse.tanh"(%18) {region = [4, 0, 4, 8], stage = 1 : i64} : (tensor<1x16xf32>) -> tensor<1x16xf32>
    %20 = "wse.layer_norm"(%19, %9, %11) {axes = 1 : i64, eps = 1.000000e-05 : f64, operandSegmentSizes = array<i32: 1, 1, 1>, region = [4, 0, 4, 8], stage = 1 : i64} : (tensor<1x16xf32>, tensor<16xf32>, tensor<16xf32>) -> tensor<1x16xf32>
    return %20 : tensor<1x16xf32>
  }
}

// -----

module attributes {wse.placement = {grid = [8, 8], mode = "streaming", target = "mesh-8x8", usable_sram_bytes_per_pe = 40960 : i64}, wse.stage_regions = [[0, 0, 8, 8], [0, 0, 8, 8]], wse.stages = ["layers.0", "layers.1+norm"]} {
  func.func @forward(%arg0: tensor<1x24xf32>) -> tensor<1x16xf32> {
    %0 = "wse.param"() {stage = 0 : i64, sym_name = "layers.0.weight"} : () -> tensor<40x24xf32>
    %1 = "wse.param"() {stage = 0 : i64, sym_name = "layers.0.bias"} : () -> tensor<40xf32>
    %2 = "wse.param"() {stage = 1 : i64, sym_name = "layers.1.weight"} : () -> tensor<16x40xf32>
    %3 = "wse.param"() {stage = 1 : i64, sym_name = "layers.1.bias"} : () -> tensor<16xf32>
    %4 = "wse.param"() {stage = 1 : i64, sym_name = "norm.weight"} : () -> tensor<16xf32>
    %5 = "wse.param"() {stage = 1 : i64, sym_name = "norm.bias"} : () -> tensor<16xf32>
    %6 = "wse.weight_tiles"(%0) {home = "external", region = [0, 0, 8, 8], sram_offset = 0 : i64, stage = 0 : i64, tile_dims = [1, 0], tile_grid = [8, 8], tile_shape = [5, 3]} : (tensor<40x24xf32>) -> tensor<40x24xf32>
    %7 = "wse.weight_tiles"(%1) {home = "external", region = [0, 0, 8, 1], sram_offset = 0 : i64, stage = 0 : i64, tile_dims = [-1, 0], tile_grid = [1, 8], tile_shape = [5]} : (tensor<40xf32>) -> tensor<40xf32>
    %8 = "wse.fabric_broadcast"(%arg0) {axis = "row", dim = 1 : i64, parts = 8 : i64, region = [0, 0, 8, 8], rows_per_pass = 1 : i64, stage = 0 : i64} : (tensor<1x24xf32>) -> tensor<1x24xf32>
    %9 = "wse.tile_matmul"(%8, %6, %7) {dataflow = "broadcast", operandSegmentSizes = array<i32: 1, 1, 1>, region = [0, 0, 8, 8], rows_per_pass = 1 : i64, stage = 0 : i64, transpose_rhs = true} : (tensor<1x24xf32>, tensor<40x24xf32>, tensor<40xf32>) -> tensor<8x1x40xf32>
    %10 = "wse.fabric_reduce"(%9) {algorithm = "tree", axis = "col", group = 1 : i64, region = [0, 0, 8, 8], stage = 0 : i64} : (tensor<8x1x40xf32>) -> tensor<1x40xf32>
    %11 = "wse.tanh"(%10) {region = [0, 0, 8, 8], stage = 1 : i64} : (tensor<1x40xf32>) -> tensor<1x40xf32>
    %12 = "wse.weight_tiles"(%2) {home = "external", region = [0, 0, 8, 8], sram_offset = 0 : i64, stage = 1 : i64, tile_dims = [1, 0], tile_grid = [8, 8], tile_shape = [2, 5]} : (tensor<16x40xf32>) -> tensor<16x40xf32>
    %13 = "wse.weight_tiles"(%3) {home = "external", region = [0, 0, 8, 1], sram_offset = 0 : i64, stage = 1 : i64, tile_dims = [-1, 0], tile_grid = [1, 8], tile_shape = [2]} : (tensor<16xf32>) -> tensor<16xf32>
    %14 = "wse.fabric_broadcast"(%11) {axis = "row", dim = 1 : i64, parts = 8 : i64, region = [0, 0, 8, 8], rows_per_pass = 1 : i64, stage = 1 : i64} : (tensor<1x40xf32>) -> tensor<1x40xf32>
    %15 = "wse.tile_matmul"(%14, %12, %13) {dataflow = "broadcast", operandSegmentSizes = array<i32: 1, 1, 1>, region = [0, 0, 8, 8], rows_per_pass = 1 : i64, stage = 1 : i64, transpose_rhs = true} : (tensor<1x40xf32>, tensor<16x40xf32>, tensor<16xf32>) -> tensor<8x1x16xf32>
    %16 = "wse.fabric_reduce"(%15) {algorithm = "tree", axis = "col", group = 1 : i64, region = [0, 0, 8, 8], stage = 1 : i64} : (tensor<8x1x16xf32>) -> tensor<1x16xf32>
    %17 = "wse.tanh"(%16) {region = [0, 0, 8, 8], stage = 1 : i64} : (tensor<1x16xf32>) -> tensor<1x16xf32>
    %18 = "wse.weight_tiles"(%4) {home = "external", region = [0, 0, 8, 1], sram_offset = 0 : i64, stage = 1 : i64, tile_dims = [-1, 0], tile_grid = [1, 8], tile_shape = [2]} : (tensor<16xf32>) -> tensor<16xf32>
    %19 = "wse.weight_tiles"(%5) {home = "external", region = [0, 0, 8, 1], sram_offset = 0 : i64, stage = 1 : i64, tile_dims = [-1, 0], tile_grid = [1, 8], tile_shape = [2]} : (tensor<16xf32>) -> tensor<16xf32>
    %20 = "wse.layer_norm"(%17, %18, %19) {axes = 1 : i64, eps = 1.000000e-05 : f64, operandSegmentSizes = array<i32: 1, 1, 1>, region = [0, 0, 8, 8], stage = 1 : i64} : (tensor<1x16xf32>, tensor<16xf32>, tensor<16xf32>) -> tensor<1x16xf32>
    return %20 : tensor<1x16xf32>
  }
}

// -----

module attributes {wse.placement = {grid = [8, 8], mode = "pipelined", target = "mesh-8x8", usable_sram_bytes_per_pe = 40960 : i64}, wse.stage_regions = [[0, 0, 8, 8]], wse.stages = ["forward"]} {
  func.func @forward(%arg0: tensor<1x8xf32>, %arg1: tensor<4x8xf32>) -> (tensor<1x8xf32>, tensor<4x8xf32>) {
    %0 = "wse.tanh"(%arg0) {region = [0, 0, 8, 8], stage = 0 : i64} : (tensor<1x8xf32>) -> tensor<1x8xf32>
    %1 = "wse.tanh"(%arg1) {region = [0, 0, 8, 8], stage = 0 : i64} : (tensor<4x8xf32>) -> tensor<4x8xf32>
    return %0, %1 : tensor<1x8xf32>, tensor<4x8xf32>
  }
}
