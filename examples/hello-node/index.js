// handler.js
exports.handler = async (event, context) => {
  console.log("Event received:", event);
  return {
    statusCode: 200,
    body: JSON.stringify({ message: "Hello from Lambda!" })
  };
};
