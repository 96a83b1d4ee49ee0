# frozen_string_literal: true

# CONTRACT.md §4, §6–§9. Under /api (and POST /graphql) the session is resolved before the route
# is known, so the fallbacks there are actions of session controllers: an unknown path with a
# session is a 404, without one a 401. A known path with another method is a 405 for the users,
# cache and GraphQL paths, a 404 elsewhere (as the Rust runtime answers).
Rails.application.routes.draw do
  id = { id: %r{[^/]+} }

  # Rails answers HEAD with the GET route; the contract's routes have no HEAD.
  match "api/users", to: "users#method_not_allowed", via: :head, format: false
  match "api/users/:id", to: "users#method_not_allowed", via: :head, constraints: id, format: false
  match "api/cache", to: "cache#method_not_allowed", via: :head, format: false
  match "graphql", to: "graphql#method_not_allowed", via: :head, format: false
  match "api/*rest", to: "users#no_route", via: :head, format: false
  match "*rest", to: "errors#no_route", via: :head, format: false

  get "healthz", to: "health#show"
  delete "internal/sessions/:code", to: "internal#forget", constraints: { code: %r{[^/]+} }, format: false

  post "graphql", to: "graphql#execute"
  match "graphql", to: "graphql#method_not_allowed", via: :all

  scope "api", format: false do
    get "users", to: "users#index"
    post "users", to: "users#create"
    match "users", to: "users#method_not_allowed", via: :all
    get "users/:id", to: "users#show", constraints: id
    patch "users/:id", to: "users#update", constraints: id
    delete "users/:id", to: "users#destroy", constraints: id
    match "users/:id", to: "users#method_not_allowed", via: :all, constraints: id
    post "users/:id/verify-password", to: "users#verify_password", constraints: id

    get "cache", to: "cache#show"
    delete "cache", to: "cache#flush"
    match "cache", to: "cache#method_not_allowed", via: :all
    put "cache/policy", to: "cache#policy"

    get "analysis", to: "analysis#show"
    post "analysis/benchmark", to: "analysis#benchmark"

    match "*rest", to: "users#no_route", via: :all
  end
  match "api", to: "users#no_route", via: :all, format: false
  match "*rest", to: "errors#no_route", via: :all, format: false
  match "/", to: "errors#no_route", via: :all
end
