// fabric-permutes: a transpose whose PE-distributed dims change order moves elements between
// PEs and becomes `wse.fabric_permute` (an all-to-all over its region); a PE-local one (the
// dims spread over PEs stay first, in order) and a relabelling (only size-1 dims move) stay.
// Input: insert-streams output on mesh-8x8 of
//     (x: 1x16x32, s: 1x8, y: 64x4x8) -> (tanh(x.reshape(1, 16, 4, 8).transpose(1, 2)),
//                                        tanh(s.transpose(0, 1)), tanh(y.transpose(1, 2)))

// RUN: compiler.opt --pass fabric-permutes %s | filecheck %s
// RUN: compiler.opt --pass 'fabric-permutes{enabled=false}' %s | filecheck %s --check-prefix=OFF

// CHECK:      %[[Q:.*]] = "wse.reshape"
// CHECK-NEXT: %[[P:.*]] = "wse.fabric_permute"(%[[Q]]) {permutation = [0, 2, 1, 3], region = [0, 0, 8, 8], stage = 0 : i64} : (tensor<1x16x4x8xf32>) -> tensor<1x4x16x8xf32>
// CHECK:      "wse.transpose"({{.*}}) {permutation = [1, 0], region = [0, 0, 8, 8], stage = 0 : i64} : (tensor<1x8xf32>) -> tensor<8x1xf32>
// CHECK:      "wse.transpose"({{.*}}) {permutation = [0, 2, 1], region = [0, 0, 8, 8], stage = 0 : i64} : (tensor<64x4x8xf32>) -> tensor<64x8x4xf32>
// CHECK:      "wse.tanh"(%[[P]])
// CHECK-NOT:  "wse.fabric_permute"

// OFF-NOT:    "wse.fabric_permute"
// OFF:        "wse.transpose"({{.*}}) {permutation = [0, 2, 1, 3]

module attributes {wse.placement = {grid = [8, 8], mode = "pipelined", target = "mesh-8x8", usable_sram_bytes_per_pe = 40960 : i64}, wse.stage_regions = [[0, 0, 8, 8]], wse.stages = ["forward"]} {
  func.func @forward(%arg0: tensor<1x16x32xf32>, %arg1: tensor<1x8xf32>, %arg2: tensor<64x4x8xf32>) -> (tensor<1x4x16x8xf32>, tensor<8x1xf32>, tensor<64x8x4xf32>) {
    %0 = "wse.host_transfer"(%arg0) {direction = "in", kind = "data", region = [0, 0, 8, 8], stage = 0 : i64} : (tensor<1x16x32xf32>) -> tensor<1x16x32xf32>
    %1 = "wse.reshape"(%0) {region = [0, 0, 8, 8], stage = 0 : i64} : (tensor<1x16x32xf32>) -> tensor<1x16x4x8xf32>
    %2 = "wse.transpose"(%1) {permutation = [0, 2, 1, 3], region = [0, 0, 8, 8], stage = 0 : i64} : (tensor<1x16x4x8xf32>) -> tensor<1x4x16x8xf32>
    %3 = "wse.host_transfer"(%arg1) {direction = "in", kind = "data", region = [0, 0, 8, 8], stage = 0 : i64} : (tensor<1x8xf32>) -> tensor<1x8xf32>
    %4 = "wse.transpose"(%3) {permutation = [1, 0], region = [0, 0, 8, 8], stage = 0 : i64} : (tensor<1x8xf32>) -> tensor<8x1xf32>
    %5 = "wse.host_transfer"(%arg2) {direction = "in", kind = "data", region = [0, 0, 8, 8], stage = 0 : i64} : (tensor<64x4x8xf32>) -> tensor<64x4x8xf32>
    %6 = "wse.transpose"(%5) {permutation = [0, 2, 1], region = [0, 0, 8, 8], stage = 0 : i64} : (tensor<64x4x8xf32>) -> tensor<64x8x4xf32>
    %7 = "wse.tanh"(%2) {region = [0, 0, 8, 8], stage = 0 : i64} : (tensor<1x4x16x8xf32>) -> tensor<1x4x16x8xf32>
    %8 = "wse.tanh"(%4) {region = [0, 0, 8, 8], stage = 0 : i64} : (tensor<8x1xf32>) -> tensor<8x1xf32>
    %9 = "wse.tanh"(%6) {region = [0, 0, 8, 8], stage = 0 : i64} : (tensor<64x8x4xf32>) -> tensor<64x8x4xf32>
    %10 = "wse.host_transfer"(%7) {direction = "out", kind = "data", region = [0, 0, 8, 8], stage = 0 : i64} : (tensor<1x4x16x8xf32>) -> tensor<1x4x16x8xf32>
    %11 = "wse.host_transfer"(%8) {direction = "out", kind = "state", region = [0, 0, 8, 8], stage = 0 : i64} : (tensor<8x1xf32>) -> tensor<8x1xf32>
    %12 = "wse.host_transfer"(%9) {direction = "out", kind = "state", region = [0, 0, 8, 8], stage = 0 : i64} : (tensor<64x8x4xf32>) -> tensor<64x8x4xf32>
    return %10, %11, %12 : tensor<1x4x16x8xf32>, tensor<8x1xf32>, tensor<64x8x4xf32>
  }
}
