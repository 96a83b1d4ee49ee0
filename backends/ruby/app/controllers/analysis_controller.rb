# frozen_string_literal: true

# Size, rows, the cache's hit ratio, and the on-demand benchmark (CONTRACT.md §9).
class AnalysisController < SessionController
  BENCHMARK = { "reads" => [Stacklab::Body::U32, false], "writes" => [Stacklab::Body::U32, false] }.freeze

  def show = render_json(200, Stacklab::Analysis.overview(session))

  def benchmark
    b = body_fields(BENCHMARK, "a benchmark")
    render_json(200, Stacklab::Analysis.benchmark(session, runtime.config, runtime.guard,
                                                  b.fetch("reads", 200), b.fetch("writes", 200)))
  end
end
