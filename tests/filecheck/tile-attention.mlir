// tile-attention: every `wse.attention` tiled flash-style over its region. q_block query rows
// per tile (at most q_rows = 8): as many tiles per (batch, head) as the region's PEs allow
// (64 PEs, 4 heads of 64 rows: 16 tiles of 4 rows; q_rows=2: 32 tiles of 2, two per PE).
// kv_block keys per step: one K block of kv_bytes (512 B / (16 x 4 B) = 8 keys). PEs left over
// split each tile's keys into kv_parts (decode, one query row per head: 4 tiles, 64 keys in 8
// blocks, 8 parts; kv_bytes=128: 32 blocks of 2 keys over 16 parts).
// plan-sram then gives each a `scratch` working set, live only while it runs: q block
// 4 x 16 x 4 B + K and V blocks double-buffered 2 x 8 x (16 + 16) x 4 B + scores, max, sum
// (4 x 8 + 2 x 4) x 4 B + accumulator 4 x 16 x 4 B = 2720 B per PE.
// Inputs: tile-weights output of SDPA with a mask and causal (GQA, 4 query / 2 kv heads),
// and a one-token (decode) attention, hand-written.

// RUN: compiler.opt --split-input-file --pass tile-attention %s | filecheck %s
// RUN: compiler.opt --split-input-file --pass 'tile-attention{q_rows=2 kv_bytes=128}' %s | filecheck %s --check-prefix=SMALL
// RUN: compiler.opt --split-input-file --pass tile-attention,plan-sram %s | filecheck %s --check-prefix=SRAM

// CHECK:      "wse.attention"(%arg0, %arg1, %arg2, %arg3) {is_causal = false, kv_block = 8 : i64, kv_parts = 1 : i64, {{.*}}q_block = 4 : i64, region = [0, 0, 8, 8]
// CHECK-NEXT: "wse.attention"(%arg0, %arg1, %arg2) {is_causal = true, kv_block = 8 : i64, kv_parts = 1 : i64, {{.*}}q_block = 4 : i64
// CHECK:      // -----
// CHECK:      "wse.attention"(%arg0, %arg1, %arg2) {is_causal = false, kv_block = 8 : i64, kv_parts = 8 : i64, {{.*}}q_block = 1 : i64

// SMALL:      "wse.attention"({{.*}}kv_block = 2 : i64, kv_parts = 1 : i64, {{.*}}q_block = 2 : i64
// SMALL:      // -----
// SMALL:      "wse.attention"({{.*}}kv_block = 2 : i64, kv_parts = 16 : i64, {{.*}}q_block = 1 : i64

// SRAM:      "wse.attention"({{.*}}q_block = 4 : i64, {{.*}}scratch = [256, 2720], sram = [0, 256]
// SRAM-NEXT: "wse.attention"({{.*}}scratch = [512, 2720], sram = [256, 256]

module attributes {wse.placement = {grid = [8, 8], mode = "pipelined", target = "mesh-8x8", usable_sram_bytes_per_pe = 40960 : i64}, wse.stage_regions = [[0, 0, 8, 8]], wse.stages = ["forward"]} {
  func.func @forward(%arg0: tensor<1x4x64x16xf32>, %arg1: tensor<1x2x64x16xf32>, %arg2: tensor<1x2x64x16xf32>, %arg3: tensor<64x64xi1>) -> (tensor<1x4x64x16xf32>, tensor<1x4x64x16xf32>) {
    %0 = "wse.attention"(%arg0, %arg1, %arg2, %arg3) {is_causal = false, operandSegmentSizes = array<i32: 1, 1, 1, 1>, region = [0, 0, 8, 8], scale = 2.500000e-01 : f64, stage = 0 : i64} : (tensor<1x4x64x16xf32>, tensor<1x2x64x16xf32>, tensor<1x2x64x16xf32>, tensor<64x64xi1>) -> tensor<1x4x64x16xf32>
    %1 = "wse.attention"(%arg0, %arg1, %arg2) {is_causal = true, operandSegmentSizes = array<i32: 1, 1, 1, 0>, region = [0, 0, 8, 8], scale = 2.500000e-01 : f64, stage = 0 : i64} : (tensor<1x4x64x16xf32>, tensor<1x2x64x16xf32>, tensor<1x2x64x16xf32>) -> tensor<1x4x64x16xf32>
    return %0, %1 : tensor<1x4x64x16xf32>, tensor<1x4x64x16xf32>
  }
}

// -----

module attributes {wse.placement = {grid = [8, 8], mode = "pipelined", target = "mesh-8x8", usable_sram_bytes_per_pe = 40960 : i64}, wse.stage_regions = [[0, 0, 8, 8]], wse.stages = ["forward"]} {
  func.func @forward(%arg0: tensor<1x4x1x16xf32>, %arg1: tensor<1x2x64x16xf32>, %arg2: tensor<1x2x64x16xf32>) -> tensor<1x4x1x16xf32> {
    %0 = "wse.attention"(%arg0, %arg1, %arg2) {is_causal = false, operandSegmentSizes = array<i32: 1, 1, 1, 0>, region = [0, 0, 8, 8], scale = 2.500000e-01 : f64, stage = 0 : i64} : (tensor<1x4x1x16xf32>, tensor<1x2x64x16xf32>, tensor<1x2x64x16xf32>) -> tensor<1x4x1x16xf32>
    return %0 : tensor<1x4x1x16xf32>
  }
}
