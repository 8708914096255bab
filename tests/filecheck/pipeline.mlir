// --pipeline: every pass in pipeline order on a lowered model, as `compiler.passes.place` runs
// them: every op of the model after its weights, in order, with no `wse.matmul` left: weights
// reach their readers as tiles, values cross stages as streams (pipelined) and enter and leave
// through host transfers, and every result has SRAM.
// Input: the lowered model of README.md.

// RUN: compiler.opt --pipeline %s | filecheck %s
// RUN: compiler.opt --pipeline --mode streaming %s | filecheck %s --check-prefix=STREAM

// CHECK: wse.placement = {grid = [8, 8], mode = "pipelined", target = "mesh-8x8", {{.*}}wse.stage_regions = {{\[\[}}0, 0, 4, 8], [4, 0, 4, 8]], wse.stages = ["layers.0", "layers.1+norm"]}
// CHECK-COUNT-6: "wse.weight_tiles"({{.*}}home = "sram"
// CHECK-NEXT: "wse.host_transfer"(%arg0) {direction = "in", kind = "data", region = [0, 0, 4, 8], sram = [
// CHECK-NEXT: "wse.fabric_broadcast"({{.*}}sram = [
// CHECK-NEXT: "wse.tile_matmul"({{.*}}sram = [
// CHECK-NEXT: "wse.fabric_reduce"({{.*}}sram = [
// CHECK-NEXT: "wse.fabric_stream"({{.*}}region = [4, 0, 4, 8], sram = [{{[0-9]+}}, 5], src_region = [0, 0, 4, 8]
// CHECK-NEXT: "wse.tanh"({{.*}}sram = [
// CHECK-NEXT: "wse.fabric_broadcast"({{.*}}sram = [
// CHECK-NEXT: "wse.tile_matmul"({{.*}}sram = [
// CHECK-NEXT: "wse.fabric_reduce"({{.*}}sram = [
// CHECK-NEXT: "wse.tanh"({{.*}}sram = [
// CHECK-NEXT: "wse.layer_norm"({{.*}}sram = [
// CHECK-NEXT: "wse.host_transfer"({{.*}}direction = "out", kind = "data", region = [4, 0, 4, 8], sram = [
// CHECK-NEXT: return

// STREAM:      wse.placement = {grid = [8, 8], mode = "streaming", target = "mesh-8x8", {{.*}}wse.stage_regions = {{\[\[}}0, 0, 8, 8], [0, 0, 8, 8]]
// STREAM-COUNT-2: "wse.weight_tiles"({{.*}}home = "external"
// STREAM-NEXT: "wse.host_transfer"(%arg0) {direction = "in"
// STREAM-NEXT: "wse.fabric_broadcast"
// STREAM-NEXT: "wse.tile_matmul"
// STREAM-NEXT: "wse.fabric_reduce"
// STREAM-NEXT: "wse.tanh"
// STREAM-NEXT: "wse.weight_tiles"({{.*}}home = "external"
// STREAM-NEXT: "wse.weight_tiles"({{.*}}home = "external"
// STREAM-NEXT: "wse.fabric_broadcast"
// STREAM-NEXT: "wse.tile_matmul"
// STREAM-NEXT: "wse.fabric_reduce"
// STREAM-NEXT: "wse.tanh"
// STREAM-NEXT: "wse.weight_tiles"({{.*}}home = "external"
// STREAM-NEXT: "wse.weight_tiles"({{.*}}home = "external"
// STREAM-NEXT: "wse.layer_norm"
// STREAM-NEXT: "wse.host_transfer"({{.*}}direction = "out"
// STREAM-NEXT: return

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
