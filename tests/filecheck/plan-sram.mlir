// plan-sram: byte ranges in each PE's usable SRAM, from offset 0 up. Pipelined: resident weight
// tiles (matrices first, vectors on top: a 10x3 f32 tile is 120 bytes), then one activation
// workspace per region where results live from their op to their last reader (first-fit
// reuse; offsets aligned to align_bytes). Streaming: the weights' buffer pool, then the
// workspace. State stays resident below the activations, and is updated in place: the state
// result leaves from its argument's buffer, and so does the op computing it when that op
// reads the old state last.
// Inputs: insert-streams output (1 row pipelined, 1 row streaming); a function with state.

// RUN: compiler.opt --split-input-file --pass plan-sram %s | filecheck %s
// RUN: compiler.opt --split-input-file --pass 'plan-sram{align_bytes=64}' %s | filecheck %s --check-prefix=ALIGN

// CHECK:      "wse.weight_tiles"({{.*}}region = [0, 0, 4, 8], sram_offset = 0 : i64, {{.*}}tile_shape = [10, 3]}
// CHECK:      "wse.weight_tiles"({{.*}}region = [0, 0, 4, 1], sram_offset = 120 : i64, {{.*}}tile_shape = [10]}
// CHECK:      "wse.weight_tiles"({{.*}}region = [4, 0, 4, 8], sram_offset = 0 : i64, {{.*}}tile_shape = [4, 5]}
// CHECK:      "wse.weight_tiles"({{.*}}region = [4, 0, 4, 1], sram_offset = 80 : i64, {{.*}}tile_shape = [4]}
// CHECK:      "wse.weight_tiles"({{.*}}region = [4, 0, 4, 1], sram_offset = 96 : i64, {{.*}}tile_shape = [4]}
// CHECK:      "wse.weight_tiles"({{.*}}region = [4, 0, 4, 1], sram_offset = 112 : i64, {{.*}}tile_shape = [4]}
// CHECK:      "wse.host_transfer"(%arg0) {{.*}}sram = [160, 3]
// CHECK-NEXT: "wse.fabric_broadcast"({{.*}}sram = [168, 12]
// CHECK-NEXT: "wse.tile_matmul"({{.*}}sram = [184, 40]
// CHECK-NEXT: "wse.fabric_reduce"({{.*}}sram = [160, 5]
// CHECK-NEXT: "wse.fabric_stream"({{.*}}sram = [128, 5]
// CHECK:      "wse.host_transfer"({{.*}}direction = "out"{{.*}}sram = [128, 2]
// CHECK:      // -----
// CHECK:      "wse.weight_tiles"({{.*}}home = "external", region = [0, 0, 8, 8], sram_offset = 0 : i64
// CHECK-NEXT: "wse.weight_tiles"({{.*}}home = "external", region = [0, 0, 8, 1], sram_offset = 64 : i64
// CHECK-NEXT: "wse.host_transfer"(%arg0) {{.*}}sram = [128, 2]
// CHECK:      "wse.weight_tiles"({{.*}}home = "external", region = [0, 0, 8, 8], sram_offset = 88 : i64
// CHECK:      // -----
// CHECK:      "wse.host_transfer"(%arg0) {{.*}}kind = "data", region = [0, 0, 8, 8], sram = [8, 1]
// CHECK:      "wse.host_transfer"(%arg1) {{.*}}kind = "state", region = [0, 0, 8, 8], sram = [0, 2]
// CHECK-NEXT: "wse.tanh"({{.*}}sram = [0, 2]
// CHECK:      "wse.host_transfer"({{.*}}direction = "out", kind = "state", {{.*}}sram = [0, 2]

// ALIGN:      "wse.weight_tiles"({{.*}}region = [0, 0, 4, 1], sram_offset = 128 : i64
// ALIGN:      "wse.host_transfer"(%arg0) {{.*}}sram = [192, 3]
// ALIGN-NEXT: "wse.fabric_broadcast"({{.*}}sram = [256, 12]

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
    %12 = "wse.host_transfer"(%arg0) {direction = "in", kind = "data", region = [0, 0, 4, 8], stage = 0 : i64} : (tensor<1x24xf32>) -> tensor<1x24xf32>
    %13 = "wse.fabric_broadcast"(%12) {axis = "row", dim = 1 : i64, parts = 8 : i64, region = [0, 0, 4, 8], rows_per_pass = 1 : i64, stage = 0 : i64} : (tensor<1x24xf32>) -> tensor<1x24xf32>
    %14 = "wse.tile_matmul"(%13, %1, %3) {dataflow = "broadcast", operandSegmentSizes = array<i32: 1, 1, 1>, region = [0, 0, 4, 8], rows_per_pass = 1 : i64, stage = 0 : i64, transpose_rhs = true} : (tensor<1x24xf32>, tensor<40x24xf32>, tensor<40xf32>) -> tensor<8x1x40xf32>
    %15 = "wse.fabric_reduce"(%14) {algorithm = "tree", axis = "col", group = 1 : i64, region = [0, 0, 4, 8], stage = 0 : i64} : (tensor<8x1x40xf32>) -> tensor<1x40xf32>
    %16 = "wse.fabric_stream"(%15) {hops = 4 : i64, region = [4, 0, 4, 8], src_region = [0, 0, 4, 8], stage = 1 : i64} : (tensor<1x40xf32>) -> tensor<1x40xf32>
    %17 = "wse.tanh"(%16) {region = [4, 0, 4, 8], stage = 1 : i64} : (tensor<1x40xf32>) -> tensor<1x40xf32>
    %18 = "wse.fabric_broadcast"(%17) {axis = "row", dim = 1 : i64, parts = 8 : i64, region = [4, 0, 4, 8], rows_per_pass = 1 : i64, stage = 1 : i64} : (tensor<1x40xf32>) -> tensor<1x40xf32>
    %19 = "wse.tile_matmul"(%18, %5, %7) {dataflow = "broadcast", operandSegmentSizes = array<i32: 1, 1, 1>, region = [4, 0, 4, 8], rows_per_pass = 1 : i64, stage = 1 : i64, transpose_rhs = true} : (tensor<1x40xf32>, tensor<16x40xf32>, tensor<16xf32>) -> tensor<8x1x16xf32>
    %20 = "wse.fabric_reduce"(%19) {algorithm = "tree", axis = "col", group = 1 : i64, region = [4, 0, 4, 8], stage = 1 : i64} : (tensor<8x1x16xf32>) -> tensor<1x16xf32>
    %21 = "wse.tanh"(%20) {region = [4, 0, 4, 8], stage = 1 : i64} : (tensor<1x16xf32>) -> tensor<1x16xf32>
    %22 = "wse.layer_norm"(%21, %9, %11) {axes = 1 : i64, eps = 1.000000e-05 : f64, operandSegmentSizes = array<i32: 1, 1, 1>, region = [4, 0, 4, 8], stage = 1 : i64} : (tensor<1x16xf32>, tensor<16xf32>, tensor<16xf32>) -> tensor<1x16xf32>
    %23 = "wse.host_transfer"(%22) {direction = "out", kind = "data", region = [4, 0, 4, 8], stage = 1 : i64} : (tensor<1x16xf32>) -> tensor<1x16xf32>
    return %23 : tensor<1x16xf32>
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
    %8 = "wse.host_transfer"(%arg0) {direction = "in", kind = "data", region = [0, 0, 8, 8], stage = 0 : i64} : (tensor<1x24xf32>) -> tensor<1x24xf32>
    %9 = "wse.fabric_broadcast"(%8) {axis = "row", dim = 1 : i64, parts = 8 : i64, region = [0, 0, 8, 8], rows_per_pass = 1 : i64, stage = 0 : i64} : (tensor<1x24xf32>) -> tensor<1x24xf32>
    %10 = "wse.tile_matmul"(%9, %6, %7) {dataflow = "broadcast", operandSegmentSizes = array<i32: 1, 1, 1>, region = [0, 0, 8, 8], rows_per_pass = 1 : i64, stage = 0 : i64, transpose_rhs = true} : (tensor<1x24xf32>, tensor<40x24xf32>, tensor<40xf32>) -> tensor<8x1x40xf32>
    %11 = "wse.fabric_reduce"(%10) {algorithm = "tree", axis = "col", group = 1 : i64, region = [0, 0, 8, 8], stage = 0 : i64} : (tensor<8x1x40xf32>) -> tensor<1x40xf32>
    %12 = "wse.tanh"(%11) {region = [0, 0, 8, 8], stage = 1 : i64} : (tensor<1x40xf32>) -> tensor<1x40xf32>
    %13 = "wse.weight_tiles"(%2) {home = "external", region = [0, 0, 8, 8], sram_offset = 0 : i64, stage = 1 : i64, tile_dims = [1, 0], tile_grid = [8, 8], tile_shape = [2, 5]} : (tensor<16x40xf32>) -> tensor<16x40xf32>
    %14 = "wse.weight_tiles"(%3) {home = "external", region = [0, 0, 8, 1], sram_offset = 0 : i64, stage = 1 : i64, tile_dims = [-1, 0], tile_grid = [1, 8], tile_shape = [2]} : (tensor<16xf32>) -> tensor<16xf32>
    %15 = "wse.fabric_broadcast"(%12) {axis = "row", dim = 1 : i64, parts = 8 : i64, region = [0, 0, 8, 8], rows_per_pass = 1 : i64, stage = 1 : i64} : (tensor<1x40xf32>) -> tensor<1x40xf32>
    %16 = "wse.tile_matmul"(%15, %13, %14) {dataflow = "broadcast", operandSegmentSizes = array<i32: 1, 1, 1>, region = [0, 0, 8, 8], rows_per_pass = 1 : i64, stage = 1 : i64, transpose_rhs = true} : (tensor<1x40xf32>, tensor<16x40xf32>, tensor<16xf32>) -> tensor<8x1x16xf32>
    %17 = "wse.fabric_reduce"(%16) {algorithm = "tree", axis = "col", group = 1 : i64, region = [0, 0, 8, 8], stage = 1 : i64} : (tensor<8x1x16xf32>) -> tensor<1x16xf32>
    %18 = "wse.tanh"(%17) {region = [0, 0, 8, 8], stage = 1 : i64} : (tensor<1x16xf32>) -> tensor<1x16xf32>
    %19 = "wse.weight_tiles"(%4) {home = "external", region = [0, 0, 8, 1], sram_offset = 0 : i64, stage = 1 : i64, tile_dims = [-1, 0], tile_grid = [1, 8], tile_shape = [2]} : (tensor<16xf32>) -> tensor<16xf32>
    %20 = "wse.weight_tiles"(%5) {home = "external", region = [0, 0, 8, 1], sram_offset = 0 : i64, stage = 1 : i64, tile_dims = [-1, 0], tile_grid = [1, 8], tile_shape = [2]} : (tensor<16xf32>) -> tensor<16xf32>
    %21 = "wse.layer_norm"(%18, %19, %20) {axes = 1 : i64, eps = 1.000000e-05 : f64, operandSegmentSizes = array<i32: 1, 1, 1>, region = [0, 0, 8, 8], stage = 1 : i64} : (tensor<1x16xf32>, tensor<16xf32>, tensor<16xf32>) -> tensor<1x16xf32>
    %22 = "wse.host_transfer"(%21) {direction = "out", kind = "data", region = [0, 0, 8, 8], stage = 1 : i64} : (tensor<1x16xf32>) -> tensor<1x16xf32>
    return %22 : tensor<1x16xf32>
  }
}

// -----

module attributes {wse.placement = {grid = [8, 8], mode = "pipelined", target = "mesh-8x8", usable_sram_bytes_per_pe = 40960 : i64}, wse.stage_regions = [[0, 0, 8, 8]], wse.stages = ["forward"]} {
  func.func @forward(%arg0: tensor<1x8xf32>, %arg1: tensor<4x8xf32>) -> (tensor<1x8xf32>, tensor<4x8xf32>) {
    %0 = "wse.host_transfer"(%arg0) {direction = "in", kind = "data", region = [0, 0, 8, 8], stage = 0 : i64} : (tensor<1x8xf32>) -> tensor<1x8xf32>
    %1 = "wse.tanh"(%0) {region = [0, 0, 8, 8], stage = 0 : i64} : (tensor<1x8xf32>) -> tensor<1x8xf32>
    %2 = "wse.host_transfer"(%arg1) {direction = "in", kind = "state", region = [0, 0, 8, 8], stage = 0 : i64} : (tensor<4x8xf32>) -> tensor<4x8xf32>
    %3 = "wse.tanh"(%2) {region = [0, 0, 8, 8], stage = 0 : i64} : (tensor<4x8xf32>) -> tensor<4x8xf32>
    %4 = "wse.host_transfer"(%1) {direction = "out", kind = "data", region = [0, 0, 8, 8], stage = 0 : i64} : (tensor<1x8xf32>) -> tensor<1x8xf32>
    %5 = "wse.host_transfer"(%3) {direction = "out", kind = "state", region = [0, 0, 8, 8], stage = 0 : i64} : (tensor<4x8xf32>) -> tensor<4x8xf32>
    return %4, %5 : tensor<1x8xf32>, tensor<4x8xf32>
  }
}
