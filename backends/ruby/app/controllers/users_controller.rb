# frozen_string_literal: true

# Users over REST (CONTRACT.md §6); every call goes to the session's service.
class UsersController < SessionController
  S = Stacklab::Body
  CREATE = { "username" => [S::STR, true], "email" => [S::STR, true], "password" => [S::STR, true],
             "full_name" => [S::STR, false] }.freeze
  UPDATE = { "username" => [S::STR, false], "email" => [S::STR, false], "password" => [S::STR, false],
             "full_name" => [S::STR, false] }.freeze
  VERIFY = { "password" => [S::STR, true] }.freeze

  def index
    page = session.list(query_param("q"), int_param("limit"), int_param("offset"), trace)
    render_json(200, page)
  end

  def create
    b = body_fields(CREATE, "a new user")
    render_json(201, session.create(b["username"], b["email"], b["password"], b["full_name"], trace))
  end

  def show = render_json(200, session.get(user_id, trace))

  def update
    id = user_id
    render_json(200, session.update(id, body_fields(UPDATE, "the changes"), trace))
  end

  def destroy
    session.delete(user_id, trace)
    render_json(200, { "deleted" => true })
  end

  def verify_password
    id = user_id
    b = body_fields(VERIFY, "a password")
    render_json(200, { "ok" => session.verify_password(id, b["password"], trace) })
  end

  private

  def user_id = Stacklab::Rules.user_id(request.path_parameters[:id].to_s)

  def int_param(name)
    v = query_param(name)
    v.nil? ? nil : Stacklab::Rules.whole(v, name, "#{name} must be a whole number")
  end
end
