// chunk-scan: every `wse.selective_scan` runs over the sequence `chunk` steps at a time (at
// most chunk_steps, default 16; a shorter sequence is one chunk), the state carried across.
// Input: tile-weights output of `wafer::selective_scan` over 600 steps (8 channels, state 4).

// RUN: compiler.opt --pass chunk-scan %s | filecheck %s
// RUN: compiler.opt --pass 'chunk-scan{chunk_steps=1000}' %s | filecheck %s --check-prefix=WHOLE

// CHECK:      "wse.selective_scan"(%arg0, %arg1, %arg2, %arg3, %arg4) {chunk = 16 : i64, delta_softplus = true,
// WHOLE:      "wse.selective_scan"(%arg0, %arg1, %arg2, %arg3, %arg4) {chunk = 600 : i64, delta_softplus = true,

module attributes {wse.placement = {grid = [8, 8], mode = "pipelined", target = "mesh-8x8", usable_sram_bytes_per_pe = 40960 : i64}, wse.stage_regions = [[0, 0, 8, 8]], wse.stages = ["forward"]} {
  func.func @forward(%arg0: tensor<1x8x600xf32>, %arg1: tensor<1x8x600xf32>, %arg2: tensor<8x4xf32>, %arg3: tensor<1x4x600xf32>, %arg4: tensor<1x4x600xf32>) -> (tensor<1x8x600xf32>, tensor<1x8x4xf32>) {
    %0:2 = "wse.selective_scan"(%arg0, %arg1, %arg2, %arg3, %arg4) {delta_softplus = true, operandSegmentSizes = array<i32: 1, 1, 1, 1, 1, 0, 0, 0, 0>, region = [0, 0, 8, 8], stage = 0 : i64} : (tensor<1x8x600xf32>, tensor<1x8x600xf32>, tensor<8x4xf32>, tensor<1x4x600xf32>, tensor<1x4x600xf32>) -> (tensor<1x8x600xf32>, tensor<1x8x4xf32>)
    return %0#0, %0#1 : tensor<1x8x600xf32>, tensor<1x8x4xf32>
  }
}
