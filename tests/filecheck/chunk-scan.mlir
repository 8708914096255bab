// chunk-scan: every `wse.selective_scan` runs over the sequence `chunk` steps at a time (at
// most chunk_steps, default 16; a shorter sequence is one chunk), the state carried across.
// A `wse.ssd_scan` (Mamba-2) gets the chunk that minimises a PE's work per step (at most
// chunk_steps and the model's chunk). Inputs: tile-weights output of `wafer::selective_scan`
// over 600 steps (8 channels, state 4), then of `wafer::ssd_scan` over 600 steps.

// RUN: compiler.opt --split-input-file --pass chunk-scan %s | filecheck %s
// RUN: compiler.opt --split-input-file --pass 'chunk-scan{chunk_steps=1000}' %s | filecheck %s --check-prefix=WHOLE

// CHECK:      "wse.selective_scan"(%arg0, %arg1, %arg2, %arg3, %arg4) {chunk = 16 : i64, delta_softplus = true,
// WHOLE:      "wse.selective_scan"(%arg0, %arg1, %arg2, %arg3, %arg4) {chunk = 600 : i64, delta_softplus = true,

module attributes {wse.placement = {grid = [8, 8], mode = "pipelined", target = "mesh-8x8", usable_sram_bytes_per_pe = 40960 : i64}, wse.stage_regions = [[0, 0, 8, 8]], wse.stages = ["forward"]} {
  func.func @forward(%arg0: tensor<1x8x600xf32>, %arg1: tensor<1x8x600xf32>, %arg2: tensor<8x4xf32>, %arg3: tensor<1x4x600xf32>, %arg4: tensor<1x4x600xf32>) -> (tensor<1x8x600xf32>, tensor<1x8x4xf32>) {
    %0:2 = "wse.selective_scan"(%arg0, %arg1, %arg2, %arg3, %arg4) {delta_softplus = true, operandSegmentSizes = array<i32: 1, 1, 1, 1, 1, 0, 0, 0, 0>, region = [0, 0, 8, 8], stage = 0 : i64} : (tensor<1x8x600xf32>, tensor<1x8x600xf32>, tensor<8x4xf32>, tensor<1x4x600xf32>, tensor<1x4x600xf32>) -> (tensor<1x8x600xf32>, tensor<1x8x4xf32>)
    return %0#0, %0#1 : tensor<1x8x600xf32>, tensor<1x8x4xf32>
  }
}

// -----

// The SSD scan's 4 heads of 64 channels (state 64) on 4 PEs: a PE holds one head, so the chunk
// is round(sqrt(64 * 64 / 128)) = 6 steps, not the model's 256 (nor chunk_steps, 16 or 1000).

// CHECK:      "wse.ssd_scan"(%arg0, %arg1, %arg2, %arg3, %arg4) {chunk = 6 : i64,
// WHOLE:      "wse.ssd_scan"(%arg0, %arg1, %arg2, %arg3, %arg4) {chunk = 6 : i64,

module attributes {wse.placement = {grid = [8, 8], mode = "pipelined", target = "mesh-8x8", usable_sram_bytes_per_pe = 40960 : i64}, wse.stage_regions = [[0, 0, 2, 2]], wse.stages = ["forward"]} {
  func.func @forward(%arg0: tensor<1x600x4x64xf32>, %arg1: tensor<1x600x4xf32>, %arg2: tensor<4xf32>, %arg3: tensor<1x600x2x64xf32>, %arg4: tensor<1x600x2x64xf32>) -> (tensor<1x600x4x64xf32>, tensor<1x4x64x64xf32>) {
    %0:2 = "wse.ssd_scan"(%arg0, %arg1, %arg2, %arg3, %arg4) {chunk = 256 : i64, operandSegmentSizes = array<i32: 1, 1, 1, 1, 1, 0, 0>, region = [0, 0, 2, 2], stage = 0 : i64} : (tensor<1x600x4x64xf32>, tensor<1x600x4xf32>, tensor<4xf32>, tensor<1x600x2x64xf32>, tensor<1x600x2x64xf32>) -> (tensor<1x600x4x64xf32>, tensor<1x4x64x64xf32>)
    return %0#0, %0#1 : tensor<1x600x4x64xf32>, tensor<1x4x64x64xf32>
  }
}
