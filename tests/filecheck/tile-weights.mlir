// tile-weights: a `wse.weight_tiles` per weight. A matmul weight in (K, N) orientation puts K
// over the PE rows and N over the columns of its matmul's region (tile_dims [1, 0] for a
// transposed torch weight); Cannon: q x q tiles on a square region. Vectors spread over the
// region's top row (one PE with split_vectors=false). Pipelined: resident (home "sram") right
// after the param; streaming: home "external", one per use, right before the user.
// Inputs: layout-regions output (1 row pipelined, 1 row streaming, 8 rows Cannon).

// RUN: compiler.opt --split-input-file --pass tile-weights %s | filecheck %s
// RUN: compiler.opt --split-input-file --pass 'tile-weights{split_vectors=false}' %s | filecheck %s --check-prefix=ONEPE

// CHECK:      %[[W:.*]] = "wse.param"() {{.*}}"layers.0.weight"} : () -> tensor<40x24xf32>
// CHECK-NEXT: %[[WT:.*]] = "wse.weight_tiles"(%[[W]]) {home = "sram", region = [0, 0, 4, 8], sram_offset = 0 : i64, stage = 0 : i64, tile_dims = [1, 0], tile_grid = [8, 4], tile_shape = [10, 3]}
// CHECK-NEXT: %[[B:.*]] = "wse.param"() {{.*}}"layers.0.bias"} : () -> tensor<40xf32>
// CHECK-NEXT: %[[BT:.*]] = "wse.weight_tiles"(%[[B]]) {home = "sram", region = [0, 0, 4, 1], sram_offset = 0 : i64, stage = 0 : i64, tile_dims = [-1, 0], tile_grid = [1, 4], tile_shape = [10]}
// CHECK-NEXT: "wse.param"() {{.*}}"layers.1.weight"} : () -> tensor<16x40xf32>
// CHECK-NEXT: "wse.weight_tiles"({{.*}}region = [4, 0, 4, 8], {{.*}}tile_grid = [8, 4], tile_shape = [4, 5]}
// CHECK:      %[[T:.*]] = "wse.transpose"(%[[WT]])
// CHECK-NEXT: "wse.matmul"(%arg0, %[[T]], %[[BT]])
// CHECK: // -----
// CHECK:      %[[SW:.*]] = "wse.param"() {{.*}}"layers.0.weight"}
// CHECK:      "wse.param"() {{.*}}"norm.bias"}
// CHECK-NEXT: %[[ST:.*]] = "wse.weight_tiles"(%[[SW]]) {home = "external", region = [0, 0, 8, 8], {{.*}}tile_grid = [8, 8], tile_shape = [5, 3]}
// CHECK-NEXT: "wse.transpose"(%[[ST]])
// CHECK-NEXT: "wse.weight_tiles"({{.*}}home = "external", region = [0, 0, 8, 1], {{.*}}tile_grid = [1, 8], tile_shape = [5]}
// CHECK-NEXT: "wse.matmul"
// CHECK: // -----
// CHECK: "wse.weight_tiles"({{.*}}home = "sram", region = [0, 0, 4, 4], {{.*}}tile_dims = [1, 0], tile_grid = [4, 4], tile_shape = [10, 6]}
// CHECK: "wse.weight_tiles"({{.*}}home = "sram", region = [4, 0, 4, 4], {{.*}}tile_dims = [1, 0], tile_grid = [4, 4], tile_shape = [4, 10]}

// ONEPE: "wse.weight_tiles"({{.*}}tile_grid = [8, 4], tile_shape = [10, 3]}
// ONEPE: "wse.weight_tiles"({{.*}}region = [0, 0, 1, 1], {{.*}}tile_grid = [1, 1], tile_shape = [40]}

module attributes {wse.placement = {grid = [8, 8], mode = "pipelined", target = "mesh-8x8", usable_sram_bytes_per_pe = 40960 : i64}, wse.stage_regions = [[0, 0, 4, 8], [4, 0, 4, 8]], wse.stages = ["layers.0", "layers.1+norm"]} {
  func.func @forward(%arg0: tensor<1x24xf32>) -> tensor<1x16xf32> {
    %0 = "wse.param"() {stage = 0 : i64, sym_name = "layers.0.weight"} : () -> tensor<40x24xf32>
    %1 = "wse.param"() {stage = 0 : i64, sym_name = "layers.0.bias"} : () -> tensor<40xf32>
    %2 = "wse.param"() {stage = 1 : i64, sym_name = "layers.1.weight"} : () -> tensor<16x40xf32>
    %3 = "wse.param"() {stage = 1 : i64, sym_name = "layers.1.bias"} : () -> tensor<16xf32>
    %4 = "wse.param"() {stage = 1 : i64, sym_name = "norm.weight"} : () -> tensor<16xf32>
    %5 = "wse.param"() {stage = 1 : i64, sym_name = "norm.bias"} : () -> tensor<16xf32>
    %6 = "wse.transpose"(%0) {permutation = [1, 0], region = [0, 0, 4, 8], stage = 0 : i64} : (tensor<40x24xf32>) -> tensor<24x40xf32>
    %7 = "wse.matmul"(%arg0, %6, %1) {dataflow = "broadcast", operandSegmentSizes = array<i32: 1, 1, 1>, region = [0, 0, 4, 8], stage = 0 : i64} : (tensor<1x24xf32>, tensor<24x40xf32>, tensor<40xf32>) -> tensor<1x40xf32>
    %8 = "wse.tanh"(%7) {region = [4, 0, 4, 8], stage = 1 : i64} : (tensor<1x40xf32>) -> tensor<1x40xf32>
    %9 = "wse.transpose"(%2) {permutation = [1, 0], region = [4, 0, 4, 8], stage = 1 : i64} : (tensor<16x40xf32>) -> tensor<40x16xf32>
    %10 = "wse.matmul"(%8, %9, %3) {dataflow = "broadcast", operandSegmentSizes = array<i32: 1, 1, 1>, region = [4, 0, 4, 8], stage = 1 : i64} : (tensor<1x40xf32>, tensor<40x16xf32>, tensor<16xf32>) -> tensor<1x16xf32>
    %11 = "wse.tanh"(%10) {region = [4, 0, 4, 8], stage = 1 : i64} : (tensor<1x16xf32>) -> tensor<1x16xf32>
    %12 = "wse.layer_norm"(%11, %4, %5) {axes = 1 : i64, eps = 1.000000e-05 : f64, operandSegmentSizes = array<i32: 1, 1, 1>, region = [4, 0, 4, 8], stage = 1 : i64} : (tensor<1x16xf32>, tensor<16xf32>, tensor<16xf32>) -> tensor<1x16xf32>
    return %12 : tensor<1x16xf32>
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
    %6 = "wse.transpose"(%0) {permutation = [1, 0], region = [0, 0, 8, 8], stage = 0 : i64} : (tensor<40x24xf32>) -> tensor<24x40xf32>
    %7 = "wse.matmul"(%arg0, %6, %1) {dataflow = "broadcast", operandSegmentSizes = array<i32: 1, 1, 1>, region = [0, 0, 8, 8], stage = 0 : i64} : (tensor<1x24xf32>, tensor<24x40xf32>, tensor<40xf32>) -> tensor<1x40xf32>
    %8 = "wse.tanh"(%7) {region = [0, 0, 8, 8], stage = 1 : i64} : (tensor<1x40xf32>) -> tensor<1x40xf32>
    %9 = "wse.transpose"(%2) {permutation = [1, 0], region = [0, 0, 8, 8], stage = 1 : i64} : (tensor<16x40xf32>) -> tensor<40x16xf32>
    %10 = "wse.matmul"(%8, %9, %3) {dataflow = "broadcast", operandSegmentSizes = array<i32: 1, 1, 1>, region = [0, 0, 8, 8], stage = 1 : i64} : (tensor<1x40xf32>, tensor<40x16xf32>, tensor<16xf32>) -> tensor<1x16xf32>
    %11 = "wse.tanh"(%10) {region = [0, 0, 8, 8], stage = 1 : i64} : (tensor<1x16xf32>) -> tensor<1x16xf32>
    %12 = "wse.layer_norm"(%11, %4, %5) {axes = 1 : i64, eps = 1.000000e-05 : f64, operandSegmentSizes = array<i32: 1, 1, 1>, region = [0, 0, 8, 8], stage = 1 : i64} : (tensor<1x16xf32>, tensor<16xf32>, tensor<16xf32>) -> tensor<1x16xf32>
    return %12 : tensor<1x16xf32>
  }
}

// -----

module attributes {wse.placement = {grid = [8, 8], mode = "pipelined", target = "mesh-8x8", usable_sram_bytes_per_pe = 40960 : i64}, wse.stage_regions = [[0, 0, 4, 8], [4, 0, 4, 8]], wse.stages = ["layers.0", "layers.1+norm"]} {
  func.func @forward(%arg0: tensor<8x24xf32>) -> tensor<8x16xf32> {
    %0 = "wse.param"() {stage = 0 : i64, sym_name = "layers.0.weight"} : () -> tensor<40x24xf32>
    %1 = "wse.param"() {stage = 0 : i64, sym_name = "layers.0.bias"} : () -> tensor<40xf32>
    %2 = "wse.param"() {stage = 1 : i64, sym_name = "layers.1.weight"} : () -> tensor<16x40xf32>
    %3 = "wse.param"() {stage = 1 : i64, sym_name = "layers.1.bias"} : () -> tensor<16xf32>
    %4 = "wse.param"() {stage = 1 : i64, sym_name = "norm.weight"} : () -> tensor<16xf32>
    %5 = "wse.param"() {stage = 1 : i64, sym_name = "norm.bias"} : () -> tensor<16xf32>
    %6 = "wse.transpose"(%0) {permutation = [1, 0], region = [0, 0, 4, 4], stage = 0 : i64} : (tensor<40x24xf32>) -> tensor<24x40xf32>
    %7 = "wse.matmul"(%arg0, %6, %1) {dataflow = "cannon", operandSegmentSizes = array<i32: 1, 1, 1>, region = [0, 0, 4, 4], stage = 0 : i64} : (tensor<8x24xf32>, tensor<24x40xf32>, tensor<40xf32>) -> tensor<8x40xf32>
    %8 = "wse.tanh"(%7) {region = [4, 0, 4, 8], stage = 1 : i64} : (tensor<8x40xf32>) -> tensor<8x40xf32>
    %9 = "wse.transpose"(%2) {permutation = [1, 0], region = [4, 0, 4, 4], stage = 1 : i64} : (tensor<16x40xf32>) -> tensor<40x16xf32>
    %10 = "wse.matmul"(%8, %9, %3) {dataflow = "cannon", operandSegmentSizes = array<i32: 1, 1, 1>, region = [4, 0, 4, 4], stage = 1 : i64} : (tensor<8x40xf32>, tensor<40x16xf32>, tensor<16xf32>) -> tensor<8x16xf32>
    %11 = "wse.tanh"(%10) {region = [4, 0, 4, 8], stage = 1 : i64} : (tensor<8x16xf32>) -> tensor<8x16xf32>
    %12 = "wse.layer_norm"(%11, %4, %5) {axes = 1 : i64, eps = 1.000000e-05 : f64, operandSegmentSizes = array<i32: 1, 1, 1>, region = [4, 0, 4, 8], stage = 1 : i64} : (tensor<8x16xf32>, tensor<16xf32>, tensor<16xf32>) -> tensor<8x16xf32>
    return %12 : tensor<8x16xf32>
  }
}
