{
  "targets": [
    {
      "target_name": "passwords",
      "sources": ["native/passwords.c"],
      "libraries": ["-lcrypt", "-largon2"]
    }
  ]
}
