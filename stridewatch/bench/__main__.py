from stridewatch.bench.cli import bench_command

bench_command()
