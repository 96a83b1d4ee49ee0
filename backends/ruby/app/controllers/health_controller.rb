# frozen_string_literal: true

# GET /healthz: liveness for control's and the proxy's checks, with the counters of §9a.
class HealthController < ApplicationController
  def show = render_json(200, { "status" => "ok", "limits" => runtime.guard.snapshot })
end
